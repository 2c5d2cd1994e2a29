"""The test rig: the real S3 servers the suite starts (moto, Ceph RGW), the one fault proxy, the
chaos runner, and the child processes that tests kill or run beside the service."""
