"""modules/sd_models.py: ``model_data`` (the loaded model, without triggering a load) and reloads."""

import threading


class SdModelData:
    def __init__(self):
        self.sd_model = None
        self.loaded_sd_models = []
        self.was_loaded_at_least_once = False
        self.lock = threading.Lock()

    def get_sd_model(self):
        return self.sd_model

    def set_sd_model(self, v):
        self.sd_model = v
        self.loaded_sd_models = [v] if v is not None else []


model_data = SdModelData()
checkpoint_aliases = {}
reload_calls = 0


def reload_model_weights(sd_model=None, info=None, forced_reload=False):
    # process_images calls this at its start; with the same checkpoint it changes nothing.
    global reload_calls
    reload_calls += 1
    return model_data.sd_model
