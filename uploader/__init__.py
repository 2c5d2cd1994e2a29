"""all_api uploader: bookended API fetches from a local file into one S3 document per day."""

# Kept literal (tests/test_install.py checks it against pyproject.toml): reading the installed
# metadata would cost every pipeline process that imports the writer some 30 ms.
__version__ = "0.1.0"
