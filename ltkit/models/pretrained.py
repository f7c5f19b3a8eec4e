"""Loading local pretrained weights into a backbone. ltkit never downloads weights.

The file is a state dict (`torch.save(model.state_dict(), path)`, e.g. of a torchvision
ResNet), or a dict holding one under "state_dict" or "model_state" (ltkit checkpoints). Rules:
- the classifier `fc.*` is loaded only when it fits (same class count, linear head); otherwise
  it keeps its fresh initialisation and a warning says so;
- a 3-channel stem conv loaded into a 1-channel model is summed over its input channels
  (a grey image then gives the response the colour net gave to that grey in RGB);
- any other missing, extra or misshaped tensor is an error: the file is for another model.
"""

from __future__ import annotations

from pathlib import Path

import torch
from torch import nn

from ltkit import console
from ltkit.errors import ArtifactError, ConfigError


def _read_state(path: Path) -> dict[str, torch.Tensor]:
    try:
        obj = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # unpickling errors come in many types
        raise ArtifactError(f"cannot read pretrained weights {path}: {exc}; "
                            "save them with torch.save(model.state_dict(), path)") from None
    if isinstance(obj, dict):
        for key in ("state_dict", "model_state"):
            if isinstance(obj.get(key), dict):
                obj = obj[key]
                break
    if not isinstance(obj, dict) or not all(isinstance(v, torch.Tensor) for v in obj.values()):
        raise ArtifactError(f"pretrained weights {path} are not a state dict of tensors; "
                            "save them with torch.save(model.state_dict(), path)")
    # DistributedDataParallel saves keys as "module.<name>"
    return {k.removeprefix("module."): v for k, v in obj.items()}


def _fit_stem(name: str, tensor: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Sum a 3-channel conv kernel over its input channels when the model takes 1 channel."""
    if (tensor.dim() == 4 and target.dim() == 4 and tensor.shape[1] == 3 and target.shape[1] == 1
            and tensor.shape[0] == target.shape[0] and tensor.shape[2:] == target.shape[2:]):
        return tensor.sum(dim=1, keepdim=True)  # (O, 3, kh, kw) -> (O, 1, kh, kw)
    return tensor


def load_pretrained(model: nn.Module, path: str | Path, arch: str) -> None:
    """Load the weights file at `path` into `model` (in place); see the module notes."""
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"pretrained weights file {path} does not exist; give a local "
                          "state-dict file (ltkit never downloads weights)")
    state = _read_state(path)
    own = model.state_dict()

    fc_keys = [k for k in state if k.startswith("fc.")]
    fc_fits = set(fc_keys) == {k for k in own if k.startswith("fc.")} and all(
        state[k].shape == own[k].shape for k in fc_keys)
    if fc_keys and not fc_fits:
        shape = tuple(state["fc.weight"].shape) if "fc.weight" in state else "?"
        console.warn(f"pretrained {path.name}: its classifier fc {shape} does not fit this "
                     f"model's head {model.fc}; fc keeps a fresh initialisation")
        state = {k: v for k, v in state.items() if not k.startswith("fc.")}

    state = {k: _fit_stem(k, v, own[k]) if k in own else v for k, v in state.items()}
    missing = [k for k in own if k not in state and not k.startswith("fc.")]
    unexpected = [k for k in state if k not in own]
    misshaped = [f"{k} {tuple(v.shape)} vs {tuple(own[k].shape)}"
                 for k, v in state.items() if k in own and v.shape != own[k].shape]
    if missing or unexpected or misshaped:
        problems = [f"{label}: {', '.join(keys[:3])}{' ...' if len(keys) > 3 else ''}"
                    for label, keys in (("missing", missing), ("unexpected", unexpected),
                                        ("misshaped", misshaped)) if keys]
        raise ArtifactError(f"pretrained weights {path} do not fit {arch} "
                            f"({'; '.join(problems)}); give weights saved from the same "
                            "architecture")
    model.load_state_dict(state, strict=False)  # only fc may be absent, checked above
