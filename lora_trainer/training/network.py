"""LoRA / LoCon built on a backend's ``{kohya_name: module}`` map.

The adapters attach with an instance-level ``forward`` on each target module (the way kohya's
``networks.lora`` does), not by replacing modules: the host model keeps its module tree, its parameter
objects and their values, and the WebUI's builtin Lora extension, which patches ``nn.Linear.forward`` at
class level, keeps working underneath (WEBUI_API.md §12.5). Detaching restores exactly what was there.
"""

from __future__ import annotations

import contextlib
import math
from typing import Iterable, Iterator, Mapping

import torch
from torch import nn


class LoRAModule(nn.Module):
    """``y = org(x) + up(down(x)) * multiplier * alpha / rank`` around one Linear or Conv2d."""

    def __init__(self, name: str, org: nn.Module, rank: int, alpha: float, multiplier: float = 1.0):
        super().__init__()
        self.lora_name = name
        if isinstance(org, nn.Conv2d):
            rank = min(rank, org.in_channels, org.out_channels)
            self.lora_down = nn.Conv2d(org.in_channels, rank, org.kernel_size, org.stride, org.padding,
                                       bias=False)
            self.lora_up = nn.Conv2d(rank, org.out_channels, 1, 1, bias=False)
        elif isinstance(org, nn.Linear):
            rank = min(rank, org.in_features, org.out_features)
            self.lora_down = nn.Linear(org.in_features, rank, bias=False)
            self.lora_up = nn.Linear(rank, org.out_features, bias=False)
        else:
            raise TypeError(f"{name}: LoRA supports Linear and Conv2d, not {type(org).__name__}")
        nn.init.kaiming_uniform_(self.lora_down.weight, a=math.sqrt(5))
        nn.init.zeros_(self.lora_up.weight)
        self.rank = rank
        self.register_buffer("alpha", torch.tensor(float(alpha)), persistent=False)
        self.scale = float(alpha) / rank
        self.multiplier = multiplier
        # Not a submodule: the base module must not appear in this network's parameters or state_dict.
        self.__dict__["org"] = org
        self.__dict__["_saved_forward"] = None
        self.__dict__["_had_instance_forward"] = False

    def attach(self) -> None:
        org = self.org
        if org.__dict__.get("forward") == self.forward:  # bound methods compare equal, never identical
            return
        self.__dict__["_had_instance_forward"] = "forward" in org.__dict__
        self.__dict__["_saved_forward"] = org.__dict__.get("forward")
        self.__dict__["org_forward"] = org.forward
        org.forward = self.forward

    def detach(self) -> None:
        org = self.org
        if org.__dict__.get("forward") != self.forward:
            return
        if self._had_instance_forward:
            org.forward = self._saved_forward
        else:
            del org.__dict__["forward"]
        self.__dict__["org_forward"] = None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.org_forward(x)
        w = self.lora_down.weight
        if x.dtype != w.dtype and not torch.is_autocast_enabled():
            return out + (self.lora_up(self.lora_down(x.to(w.dtype))) * (self.multiplier * self.scale)).to(out.dtype)
        return out + self.lora_up(self.lora_down(x)) * (self.multiplier * self.scale)


class LoRANetwork(nn.Module):
    """A set of LoRAModules keyed by kohya name; ``state_dict_kohya`` is the file's tensors."""

    def __init__(self, targets: Mapping[str, nn.Module], rank: int, alpha: float,
                 conv_rank: int = 0, conv_alpha: float = 1.0, multiplier: float = 1.0):
        super().__init__()
        self.loras = nn.ModuleDict()
        for name, module in targets.items():
            is_conv3 = isinstance(module, nn.Conv2d) and module.kernel_size != (1, 1)
            r, a = (conv_rank, conv_alpha) if is_conv3 else (rank, alpha)
            if r <= 0:
                continue
            self.loras[name] = LoRAModule(name, module, r, a, multiplier)

    def __len__(self) -> int:
        return len(self.loras)

    def names(self) -> list[str]:
        return list(self.loras.keys())

    def parts(self, prefix: str) -> Iterable[LoRAModule]:
        return (m for n, m in self.loras.items() if n.startswith(prefix + "_"))

    def set_multiplier(self, value: float) -> None:
        for m in self.loras.values():
            m.multiplier = value

    def attach(self) -> None:
        for m in self.loras.values():
            m.attach()

    def detach(self) -> None:
        for m in self.loras.values():
            m.detach()

    @contextlib.contextmanager
    def applied(self) -> Iterator["LoRANetwork"]:
        """Attach for the duration of the block; always detach, also on error or cancel."""
        self.attach()
        try:
            yield self
        finally:
            self.detach()

    def state_dict_kohya(self, dtype: torch.dtype | None = None) -> dict[str, torch.Tensor]:
        out: dict[str, torch.Tensor] = {}
        for name, m in self.loras.items():
            down = m.lora_down.weight.detach()
            up = m.lora_up.weight.detach()
            if dtype is not None:
                down, up = down.to(dtype), up.to(dtype)
            out[f"{name}.lora_down.weight"] = down.contiguous().cpu()
            out[f"{name}.lora_up.weight"] = up.contiguous().cpu()
            out[f"{name}.alpha"] = m.alpha.detach().to(dtype or torch.float32).cpu()
        return out

    def load_kohya(self, sd: Mapping[str, torch.Tensor]) -> None:
        """Load kohya-format tensors into this network (same names and shapes); unknown keys are an error."""
        expected = set(self.state_dict_kohya())
        missing = expected - set(sd)
        extra = set(sd) - expected
        if missing or extra:
            raise KeyError(f"LoRA keys differ: {len(missing)} missing, {len(extra)} unexpected "
                           f"(e.g. {sorted(missing or extra)[:2]})")
        with torch.no_grad():
            for name, m in self.loras.items():
                m.lora_down.weight.copy_(sd[f"{name}.lora_down.weight"])
                m.lora_up.weight.copy_(sd[f"{name}.lora_up.weight"])
                a = float(sd[f"{name}.alpha"])
                m.alpha.fill_(a)
                m.scale = a / m.rank

    def all_finite(self) -> bool:
        """One host sync for the whole network."""
        flags = [torch.isfinite(p).all() for p in self.parameters()]
        return bool(torch.stack(flags).all()) if flags else True
