"""nvidia on a machine without a GPU: facts recorded, the skip explained, nothing installed."""

import json


def test_the_local_fact_records_no_gpu_and_why(host):
    fact = json.loads(host.file("/etc/ansible/facts.d/nvidia.fact").content_string)
    assert fact["gpu_count"] == 0 and fact["devices"] == []
    assert fact["driver_version"] is None
    assert fact["skipped_reason"] == "no NVIDIA GPU on the PCI bus"


def test_no_driver_or_cuda_was_installed(host):
    installed = host.run("dpkg-query -W -f '${Package}\\n'").stdout.split()
    assert not [p for p in installed if p.startswith(("nvidia-", "cuda-", "libnvidia"))]
    assert not host.exists("nvidia-smi")
    assert not host.file("/etc/apt/sources.list.d/cuda.sources").exists
