"""modules/sd_unet.py: ``current_unet`` is not None while an SD-UNet override (e.g. TensorRT) replaces the UNet."""

current_unet = None
