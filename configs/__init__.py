"""The experiment configs, shipped in the wheel as ``videoedit.configs`` (see ``videoedit/config.py``)."""
