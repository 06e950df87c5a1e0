"""extensions-builtin/Lora/networks.py (+ network.py): the builtin Lora extension, imported by the WebUI as the
top-level module ``networks``.

What matters to a trainer and is reproduced here: discovery of files in ``cmd_opts.lora_dir`` (names are file
stems, ``ss_output_name`` is the alias), ``load_networks`` rescanning for unknown names, and the merge
semantics of ``network_apply_weights``: the first forward with a network backs each layer's weight up on
the CPU and adds ``up @ down * alpha/dim * multiplier`` into it IN PLACE; ``loaded_networks`` stays populated
after a generation, so the LoRA stays merged until a forward with a different set restores the backup
(WEBUI_API.md §6.2, §13). The WebUI runs this inside forwards it patches at class level; the double's
``processing.process_images`` calls ``apply_to_model`` instead, so no class in torch is patched.
Key-name resolution uses ``tests/webui_lora_loader.py`` (written from the same documented rules).
"""

import hashlib
import os

import torch
from modules import devices, shared

from webui_lora_loader import _find, lora_delta, webui_layer_mapping

available_networks = {}
available_network_aliases = {}
forbidden_network_aliases = {}
available_network_hash_lookup = {}
loaded_networks = []
list_calls = 0


class NetworkOnDisk:  # network.py
    def __init__(self, name, filename):
        from safetensors import safe_open

        self.name = name
        self.filename = filename
        with safe_open(filename, framework="pt") as f:
            self.metadata = dict(f.metadata() or {})
        self.alias = self.metadata.get("ss_output_name", name)
        self.hash = self.metadata.get("sshs_model_hash") or _addnet_hash(filename)
        self.shorthash = self.hash[:12]


class Network:  # network.py
    def __init__(self, name, network_on_disk):
        self.name = name
        self.network_on_disk = network_on_disk
        self.te_multiplier = 1.0
        self.unet_multiplier = 1.0
        self.dyn_dim = None
        self.modules = {}  # network_layer_name -> (up, down, scale)
        self.mtime = os.path.getmtime(network_on_disk.filename)


def _addnet_hash(filename):
    with open(filename, "rb") as fh:
        n = int.from_bytes(fh.read(8), "little")
        fh.seek(8 + n)
        return hashlib.sha256(fh.read()).hexdigest()


def _walk(folder):
    if not folder or not os.path.isdir(folder):
        return
    for root, _dirs, files in os.walk(folder, followlinks=True):
        for f in sorted(files):
            if os.path.splitext(f)[1].lower() in (".pt", ".ckpt", ".safetensors"):
                yield os.path.join(root, f)


def process_network_files(names=None):
    for filename in list(_walk(shared.cmd_opts.lora_dir)) + list(_walk(shared.cmd_opts.lyco_dir_backcompat)):
        name = os.path.splitext(os.path.basename(filename))[0]
        if names and name not in names:
            continue
        entry = NetworkOnDisk(name, filename)
        available_networks[name] = entry
        if entry.alias in available_network_aliases:
            forbidden_network_aliases[entry.alias.lower()] = 1
        available_network_aliases[name] = entry
        available_network_aliases[entry.alias] = entry
        available_network_hash_lookup[entry.shorthash] = entry


def update_available_networks_by_names(names):
    process_network_files(names)


def list_available_networks():
    global list_calls
    list_calls += 1
    available_networks.clear()
    available_network_aliases.clear()
    forbidden_network_aliases.clear()
    available_network_hash_lookup.clear()
    forbidden_network_aliases.update({"none": 1, "Addams": 1})
    os.makedirs(shared.cmd_opts.lora_dir, exist_ok=True)
    process_network_files()


def assign_network_names_to_compvis_modules(sd_model):
    mapping = webui_layer_mapping(sd_model)
    for name, module in mapping.items():
        module.network_layer_name = name
    sd_model.network_layer_mapping = mapping


def load_network(name, network_on_disk):
    from safetensors.torch import load_file

    net = Network(name, network_on_disk)
    mapping = shared.sd_model.network_layer_mapping
    is_sd2 = "model_transformer_resblocks" in mapping
    groups = {}
    for key, tensor in load_file(network_on_disk.filename).items():
        prefix, _, part = key.partition(".")
        sd_key, module = _find(prefix, mapping, is_sd2)
        if module is not None:  # the WebUI only logs unmatched keys at debug level
            groups.setdefault(sd_key, {})[part] = tensor
    for sd_key, w in groups.items():
        down = w["lora_down.weight"]
        scale = float(w["alpha"]) / down.shape[0] if "alpha" in w else 1.0
        net.modules[sd_key] = (w["lora_up.weight"], down, scale)
    return net


def load_networks(names, te_multipliers=None, unet_multipliers=None, dyn_dims=None):
    missing = [n for n in names if available_network_aliases.get(n) is None]
    if missing:  # 1.10: a partial rescan, then a full one (new files work without a manual refresh)
        update_available_networks_by_names(missing)
        if any(available_network_aliases.get(n) is None for n in missing):
            list_available_networks()
    loaded_networks.clear()
    for i, name in enumerate(names):
        on_disk = available_network_aliases.get(name)
        if on_disk is None:
            continue
        net = load_network(name, on_disk)
        net.te_multiplier = te_multipliers[i] if te_multipliers else 1.0
        net.unet_multiplier = unet_multipliers[i] if unet_multipliers else 1.0
        net.dyn_dim = dyn_dims[i] if dyn_dims else None
        loaded_networks.append(net)


def _restore(obj, field, backup):
    if backup is None:
        setattr(obj, field, None)
        return
    getattr(obj, field).copy_(backup)  # in place, as the WebUI; not under no_grad (its callers are)


def network_restore_weights_from_backup(self):
    weights_backup = getattr(self, "network_weights_backup", None)
    bias_backup = getattr(self, "network_bias_backup", None)
    if weights_backup is None and bias_backup is None:
        return
    if weights_backup is not None:
        _restore(self, "weight", weights_backup)
    _restore(self, "bias", bias_backup)


def network_reset_cached_weight(self):
    self.network_current_names = ()
    self.network_weights_backup = None
    self.network_bias_backup = None


def network_apply_weights(self):
    layer_name = getattr(self, "network_layer_name", None)
    if layer_name is None:
        return
    current_names = getattr(self, "network_current_names", ())
    wanted_names = tuple((x.name, x.te_multiplier, x.unet_multiplier, x.dyn_dim) for x in loaded_networks)

    weights_backup = getattr(self, "network_weights_backup", None)
    if weights_backup is None and wanted_names != ():
        if current_names != ():
            raise RuntimeError(f"{layer_name} - no backup weights found and current weights are not unchanged")
        self.network_weights_backup = self.weight.to(devices.cpu, copy=True)
    bias_backup = getattr(self, "network_bias_backup", None)
    if bias_backup is None and wanted_names != () and getattr(self, "bias", None) is not None:
        self.network_bias_backup = self.bias.to(devices.cpu, copy=True)

    if current_names != wanted_names:
        network_restore_weights_from_backup(self)
        for net in loaded_networks:
            found = net.modules.get(layer_name)
            if found is None:
                continue
            up, down, scale = found
            mult = net.te_multiplier if "transformer" in layer_name[:20] else net.unet_multiplier
            with torch.no_grad():
                delta = lora_delta(up.float(), down.float(), self.weight.shape) * scale * mult
                self.weight += delta.to(self.weight.device, self.weight.dtype)
        self.network_current_names = wanted_names


def apply_to_model(sd_model):
    """Double only: what the patched layer forwards (Linear, Conv2d, GroupNorm, LayerNorm, MultiheadAttention)
    do during a generation, for every named layer of those classes."""
    patched = (torch.nn.Linear, torch.nn.Conv2d, torch.nn.GroupNorm, torch.nn.LayerNorm, torch.nn.MultiheadAttention)
    for module in sd_model.modules():
        if isinstance(module, patched) and getattr(module, "network_layer_name", None) is not None:
            network_apply_weights(module)
