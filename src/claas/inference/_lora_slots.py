"""Adapter versions resident in one ``PeftModel``, in a bounded set of reusable slots.

A slot is one PEFT adapter: LoRA layers injected into every target module. Injecting
them, and remapping the state dict into them, is most of what loading a version costs
(hundreds of modules, in Python). So a version whose LoRA config equals a free slot's,
a superseded version's slot's (a newer version not yet live, such as the guard's
candidate, takes an earlier version's other than its parent's), or (when the cache is
full) an evicted slot's is copied into that slot's tensors instead; anything else gets
a freshly injected slot.

Stale weights cannot be served: a slot's old version is unmapped before the first
tensor is overwritten, and the new version is mapped only after the last one is. A
slot is reused only when the new file has exactly the slot's tensor names and shapes.
Not thread-safe: the caller holds one lock around every call and every generation.
"""

from __future__ import annotations

import hashlib
import itertools
import json
from collections import OrderedDict
from collections.abc import Callable
from pathlib import Path
from typing import Any

import attrs

from claas._fast_forward import install_lora_forward
from claas.errors import StorageError
from claas.types import AdapterVersion

__all__ = ["LoraSlots", "version_key"]

CONFIG_FILE = "adapter_config.json"
WEIGHTS_FILE = "adapter_model.safetensors"


def version_key(version: AdapterVersion) -> str:
    """A key unique to one stored version.

    The creation time keeps a deleted-and-recreated adapter's v0 from matching the
    old one's.
    """
    identity = f"{version.ref}:{version.created!r}"
    return hashlib.sha1(identity.encode()).hexdigest()[:16]


@attrs.define(eq=False)
class _Slot:
    name: str
    config: dict[str, Any]
    version: AdapterVersion | None = None
    # State-dict key (as in the adapter file) -> the slot's tensor, found on first reuse.
    tensors: dict[str, Any] | None = None


class LoraSlots:
    """At most ``capacity`` slots, least recently used first.

    Args:
        base: Returns the base model (called once, when the first version loads).
        capacity: The most slots kept.
        device: Where adapter weights are read to.
    """

    def __init__(self, base: Callable[[], Any], capacity: int, device: str) -> None:
        self._base = base
        self._capacity = capacity
        self._device = device
        self.model: Any = None
        self._slots: OrderedDict[str, _Slot] = OrderedDict()
        self._by_key: dict[str, _Slot] = {}
        self._names = itertools.count()
        self._layers: list[Any] | None = None  # the model's LoRA layers, found on first switch

    def resident(self) -> list[AdapterVersion]:
        """The versions loaded now, least recently used first."""
        return [s.version for s in self._slots.values() if s.version is not None]

    def load(self, version: AdapterVersion, *, supersedes: bool = False) -> str:
        """Make ``version`` resident; return its PEFT adapter name.

        Args:
            version: The version to load.
            supersedes: ``version`` replaces its adapter's earlier versions (a publish),
                so one of their slots may take it even when the cache is not full.
        """
        slot = self._by_key.get(version_key(version))
        if slot is None:
            slot = self._fill(version, supersedes)
        self._slots.move_to_end(slot.name)
        return slot.name

    def activate(self, name: str) -> None:
        """Make slot ``name`` the adapter the model computes with, its weights frozen.

        What ``PeftModel.set_adapter(name, inference_mode=True)`` does for LoRA, but
        its two walks over every module of the model (about 28 ms a switch on the
        bundled model, once into the guard's candidate and once back) are made once:
        the LoRA layers are kept until a slot is injected or deleted. Each layer's
        active adapter is then set directly: ``BaseTunerLayer.set_adapter`` would
        also set ``requires_grad`` on every slot's weights again (10 ms a switch
        here), and they stay frozen from their loading on (``is_trainable=False``).
        """
        if name not in self._slots:
            raise KeyError(f"no adapter slot {name!r}")
        if self._layers is None:
            from peft.tuners.tuners_utils import BaseTunerLayer

            self._layers = [m for m in self.model.modules() if isinstance(m, BaseTunerLayer)]
        for layer in self._layers:
            layer._active_adapter = [name]
        self.model.active_adapter = name
        self.model.base_model.active_adapter = name

    def free(self, adapter_id: str) -> None:
        """Unmap every version of ``adapter_id``; their slots become the first reused."""
        for slot in list(self._slots.values()):
            if slot.version is not None and slot.version.adapter_id == adapter_id:
                self._unmap(slot)
                self._slots.move_to_end(slot.name, last=False)

    def clear(self) -> None:
        """Forget the model and every slot."""
        self.model = None
        self._layers = None
        self._slots.clear()
        self._by_key.clear()

    def _fill(self, version: AdapterVersion, supersedes: bool) -> _Slot:
        path = Path(version.path)
        try:
            config = json.loads((path / CONFIG_FILE).read_text())
        except FileNotFoundError as exc:
            raise StorageError(
                f"version {version.ref} has no {CONFIG_FILE}: it is not a PEFT adapter "
                "that local inference can load"
            ) from exc
        slot = self._reusable(version, config, supersedes)
        if slot is None or not self._overwrite(slot, path):
            slot = self._inject(path, config)
        self._map(slot, version)
        self._trim(keep=slot)
        return slot

    def _reusable(
        self, version: AdapterVersion, config: dict[str, Any], supersedes: bool
    ) -> _Slot | None:
        compatible = [s for s in self._slots.values() if s.config == config]
        for slot in compatible:
            if slot.version is None:
                return slot
        for slot in compatible:
            held = slot.version
            assert held is not None  # free slots were taken above
            if held.adapter_id != version.adapter_id:
                continue
            # A published version may take any earlier one's slot; a newer version not
            # live yet (the guard's candidate) only one that is not its parent, which is
            # what is served meanwhile.
            if supersedes or (held.version < version.version and held.version != version.parent):
                return slot
        if compatible and len(self._slots) >= self._capacity:
            return compatible[0]
        return None

    def _overwrite(self, slot: _Slot, path: Path) -> bool:
        """Copy the file's weights into ``slot``; False (slot untouched) if they do not fit."""
        import torch
        from peft import get_peft_model_state_dict
        from safetensors.torch import load_file

        weights = load_file(str(path / WEIGHTS_FILE), device=self._device)
        if slot.tensors is None:
            # Only the LoRA tensors: the embeddings are the base model's, never changed.
            slot.tensors = get_peft_model_state_dict(
                self.model, adapter_name=slot.name, save_embedding_layers=False
            )
        tensors = slot.tensors
        if weights.keys() != tensors.keys() or any(
            weights[k].shape != t.shape for k, t in tensors.items()
        ):
            return False
        self._unmap(slot)
        with torch.no_grad():
            for key, tensor in tensors.items():
                tensor.copy_(weights[key])
        return True

    def _inject(self, path: Path, config: dict[str, Any]) -> _Slot:
        from peft import PeftModel

        name = f"slot{next(self._names)}"
        if self.model is None:
            self.model = PeftModel.from_pretrained(self._base(), str(path), adapter_name=name)
        else:
            self.model.load_adapter(str(path), adapter_name=name)
        self.model.eval()
        install_lora_forward(self.model)
        self._layers = None  # a new config may have wrapped more modules
        slot = _Slot(name, config)
        self._slots[name] = slot
        return slot

    def _trim(self, keep: _Slot) -> None:
        for slot in list(self._slots.values()):
            if len(self._slots) <= self._capacity:
                return
            if slot is not keep:
                self._unmap(slot)
                del self._slots[slot.name]
                self.model.delete_adapter(slot.name)
                self._layers = None

    def _map(self, slot: _Slot, version: AdapterVersion) -> None:
        self._unmap(slot)
        slot.version = version
        self._by_key[version_key(version)] = slot

    def _unmap(self, slot: _Slot) -> None:
        if slot.version is not None:
            del self._by_key[version_key(slot.version)]
            slot.version = None
