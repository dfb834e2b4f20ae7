"""Checkpoint loading stays under torch's weights-only unpickler (mmvmamba/utils/safe_load.py)."""
import os

import pytest
import torch
import torch.nn as nn

from mmvmamba.utils import UnsafeCheckpointError, load_runner_checkpoint, load_third_party


class _RunsCodeWhenUnpickled:
    """Unpickling this calls os.makedirs(marker): a stand-in for any malicious payload."""

    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return os.makedirs, (self.marker,)


class _TrainingConfig:
    """A harmless pickled object, like the yacs config inside released VMamba checkpoints."""

    def __init__(self, lr):
        self.lr = lr


@pytest.fixture
def evil_checkpoint(tmp_path):
    marker = str(tmp_path / 'payload_ran')
    path = tmp_path / 'evil.pth'
    torch.save({'state_dict': {'w': torch.ones(2)}, 'meta': _RunsCodeWhenUnpickled(marker)}, path)
    return str(path), marker


def test_third_party_payload_is_refused(evil_checkpoint):
    path, marker = evil_checkpoint
    with pytest.raises(UnsafeCheckpointError, match='--unsafe-allow-pickle'):
        load_third_party(path)
    assert not os.path.exists(marker)


def test_runner_loader_refuses_payload_too(evil_checkpoint):
    path, marker = evil_checkpoint
    with pytest.raises(UnsafeCheckpointError, match='posix.makedirs|os.makedirs'):
        load_runner_checkpoint(path)
    assert not os.path.exists(marker)


def _torch_file_with_pickle(path, payload: bytes):
    """Write a torch zip checkpoint whose data.pkl is ``payload``, a hand-made pickle."""
    import io
    import zipfile

    buf = io.BytesIO()
    torch.save({}, buf)
    with zipfile.ZipFile(io.BytesIO(buf.getvalue())) as zin, \
            zipfile.ZipFile(path, 'w', zipfile.ZIP_STORED) as zout:
        for item in zin.infolist():
            data = zin.read(item.filename)
            zout.writestr(item, payload if item.filename.endswith('data.pkl') else data)


def test_allowed_getattr_cannot_reach_code(tmp_path):
    """Runner checkpoints need ``getattr`` allowed; a getattr chain to ``exec`` is still refused."""
    import pickle

    def text(s):
        b = s.encode()
        return b'X' + len(b).to_bytes(4, 'little') + b

    marker = tmp_path / 'payload_ran'
    get = b'c__builtin__\ngetattr\n'
    # exec(f"open({marker!r}, 'w')") where exec = getattr(getattr(getattr, '__self__'), 'exec')
    payload = (b'\x80\x02' + get + b'(' + get + b'(' + get + text('__self__') + b'tR'
               + text('exec') + b'tR(' + text(f"open({str(marker)!r}, 'w')") + b'tR.')
    pickle.loads(payload)  # the payload is live: plain unpickling runs it
    assert marker.exists()
    marker.unlink()

    path = tmp_path / 'getattr_chain.pth'
    _torch_file_with_pickle(path, payload)
    with pytest.raises(UnsafeCheckpointError):
        load_runner_checkpoint(str(path))
    assert not marker.exists()


def test_mmengine_load_checkpoint_refuses_payload(evil_checkpoint):
    from mmengine.runner.checkpoint import _load_checkpoint

    import mmvmamba  # noqa: F401  (installs the loader)

    path, marker = evil_checkpoint
    with pytest.raises(UnsafeCheckpointError):
        _load_checkpoint(path, map_location='cpu')
    assert not os.path.exists(marker)


def test_explicit_opt_in_reads_pickled_objects(tmp_path):
    path = tmp_path / 'with_objects.pth'
    torch.save({'model': {'w': torch.ones(2)}, 'config': _TrainingConfig(lr=0.1)}, path)
    with pytest.raises(UnsafeCheckpointError, match='_TrainingConfig'):
        load_third_party(str(path))
    ckpt = load_third_party(str(path), allow_pickle=True)
    assert ckpt['config'].lr == 0.1


def test_plain_weights_load(tmp_path):
    path = tmp_path / 'plain.pth'
    torch.save({'state_dict': {'w': torch.arange(3.)}, 'meta': {'epoch': 1, 'note': 'x'}}, path)
    assert torch.equal(load_third_party(str(path))['state_dict']['w'], torch.arange(3.))


def test_missing_file_names_the_path(tmp_path):
    missing = str(tmp_path / 'nope.pth')
    with pytest.raises(FileNotFoundError, match='nope.pth'):
        load_third_party(missing)


class _TinyModel(nn.Module):
    """An mmengine model of one linear layer on random data."""

    def __init__(self):
        super().__init__()
        self.linear = nn.Linear(4, 1)

    def forward(self, inputs, targets, mode='loss'):
        loss = ((self.linear(inputs) - targets) ** 2).mean()
        return {'loss': loss}


class _Dataset(torch.utils.data.Dataset):
    def __len__(self):
        return 16

    def __getitem__(self, i):
        g = torch.Generator().manual_seed(i)
        return dict(inputs=torch.randn(4, generator=g), targets=torch.randn(1, generator=g))


def _runner(work_dir, max_iters, resume=False, load_from=None):
    from mmengine.model import BaseModel
    from mmengine.runner import Runner

    class Model(BaseModel):
        def __init__(self):
            super().__init__()
            self.net = _TinyModel()

        def forward(self, inputs, targets, mode='loss'):
            return self.net(inputs, targets)

    return Runner(
        model=Model(), work_dir=str(work_dir),
        train_dataloader=dict(dataset=_Dataset(), batch_size=4,
                              sampler=dict(type='DefaultSampler', shuffle=True),
                              collate_fn=dict(type='default_collate')),
        optim_wrapper=dict(optimizer=dict(type='SGD', lr=0.1, momentum=0.9)),
        train_cfg=dict(by_epoch=False, max_iters=max_iters),
        default_hooks=dict(checkpoint=dict(type='CheckpointHook', interval=2, by_epoch=False),
                           logger=dict(type='LoggerHook', interval=1)),
        resume=resume, load_from=load_from, randomness=dict(seed=0),
        default_scope='mmengine')


def test_runner_checkpoint_resumes_under_weights_only(tmp_path):
    import mmvmamba  # noqa: F401  (installs the loader)

    runner = _runner(tmp_path, max_iters=2)
    runner.train()
    ckpt_path = tmp_path / 'iter_2.pth'
    assert ckpt_path.is_file()
    # The file really needs more than torch's default allowlist...
    with pytest.raises(Exception, match='weights_only|Unsupported global'):
        torch.load(ckpt_path, weights_only=True)
    # ...and mmvmamba's loader reads it, and the Runner resumes from it.
    assert load_runner_checkpoint(str(ckpt_path))['meta']['iter'] == 2
    resumed = _runner(tmp_path, max_iters=4, resume=True, load_from=str(ckpt_path))
    resumed.train()
    assert resumed.iter == 4
