"""modules/options.py (1.6+): ``OptionInfo`` and ``Options`` as extensions use them (``shared.opts``)."""


class OptionInfo:
    # 1.6 signature: no category_id (1.7+ adds it as a keyword); extensions must not rely on it.
    def __init__(self, default=None, label="", component=None, component_args=None, onchange=None, section=None,
                 refresh=None, comment_before="", comment_after="", infotext=None, restrict_api=False):
        self.default = default
        self.label = label
        self.component = component
        self.component_args = component_args
        self.onchange = onchange
        self.section = section
        self.refresh = refresh
        self.comment_before = comment_before
        self.comment_after = comment_after
        self.do_not_save = False
        self.restart = False

    def info(self, info):
        self.comment_after += f"<span class='info'>({info})</span>"
        return self

    def needs_restart(self):
        self.restart = True
        return self

    def needs_reload_ui(self):
        return self


def options_section(section_identifier, options_dict):
    for v in options_dict.values():
        v.section = section_identifier
    return options_dict


class Options:
    def __init__(self, data_labels):
        super().__setattr__("data_labels", dict(data_labels))
        super().__setattr__("data", {k: v.default for k, v in data_labels.items()})

    def __getattr__(self, item):
        data = super().__getattribute__("data")
        if item in data:
            return data[item]
        labels = super().__getattribute__("data_labels")
        if item in labels:
            return labels[item].default
        raise AttributeError(item)

    def __setattr__(self, key, value):
        if key in self.data_labels or key in self.data:
            self.data[key] = value
            return
        super().__setattr__(key, value)

    def add_option(self, key, info):
        self.data_labels[key] = info
        if key not in self.data and not info.do_not_save:
            self.data[key] = info.default
