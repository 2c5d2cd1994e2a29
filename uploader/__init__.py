"""all_api uploader: bookended API fetches from a local file into one S3 document per day."""

__version__ = "0.1.0"
