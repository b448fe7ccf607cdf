"""keys.py ENGINE: prints every key the engine's config schema accepts, one per line,
sorted; tests/handoff.rs checks an exported config against it.

llamafactory: the fields of the dataclasses its `train` parser is built from.
axolotl: the fields of its top-level config model, and `datasets.<key>` for those of a
dataset entry (SFTDataset)."""
import dataclasses
import sys

engine = sys.argv[1]
keys = set()
if engine == "llamafactory":
    from llamafactory.hparams.parser import _TRAIN_ARGS

    for cls in _TRAIN_ARGS:
        keys.update(f.name for f in dataclasses.fields(cls) if f.init)
elif engine == "axolotl":
    from axolotl.utils.schemas.config import AxolotlInputConfig
    from axolotl.utils.schemas.datasets import SFTDataset

    keys.update(f.alias or n for n, f in AxolotlInputConfig.model_fields.items())
    keys.update("datasets." + (f.alias or n) for n, f in SFTDataset.model_fields.items())
else:
    sys.exit(f"unknown engine {engine}")
print("\n".join(sorted(keys)))
