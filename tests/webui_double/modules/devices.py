"""modules/devices.py: where and how the host runs its model (a CPU, --no-half run here).

The adapter reads ``device`` (where training computes) and ``fp8`` (1.8+: fp8 weight storage, refused);
``dtype``/``dtype_unet`` document the run (the adapter takes the dtype from the UNet's weights); the
builtin Lora keeps its backups on ``cpu``.
"""

import torch

cpu = torch.device("cpu")
device = cpu
dtype = torch.float32
dtype_unet = torch.float32
fp8 = False
