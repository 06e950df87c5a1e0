"""modules/launch_utils.py: ``git_tag()`` gives the WebUI's version string (``git describe --tags``)."""


def git_tag():
    return "v1.10.1"
