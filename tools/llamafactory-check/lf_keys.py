"""Prints every argument LLaMA-Factory's `train` parser accepts, one per line, sorted: the
fixture tests/handoff.rs checks an exported train.yaml against."""
import dataclasses

from llamafactory.hparams.parser import _TRAIN_ARGS

keys = set()
for cls in _TRAIN_ARGS:
    keys.update(f.name for f in dataclasses.fields(cls) if f.init)
print("\n".join(sorted(keys)))
