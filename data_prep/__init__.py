"""Dataset adapters: runnable scripts (``python data_prep/<name>.py``) that write data dirs and lists."""
