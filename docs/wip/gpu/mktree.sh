# mktree NAME OVERLAY: a copy of this tree at /tmp/NAME with OVERLAY's files laid over it.
mktree() {
  rm -rf "/tmp/$1" && mkdir -p "/tmp/$1" && git ls-files -z | xargs -0 -I{} cp --parents {} "/tmp/$1/"
  cp -r "$2"/. "/tmp/$1/"
}
