#!/usr/bin/python
"""Ansible module: count the NVIDIA GPUs on the PCI bus and tell whether a driver is already loaded."""

from __future__ import annotations

DOCUMENTATION = r"""
module: nvidia_gpu_facts
short_description: NVIDIA GPUs on the PCI bus, and the loaded driver if any
description:
  - Reads sysfs, so it needs neither a driver nor nvidia-smi, and answers on machines without a GPU.
  - Sets the fact C(nvidia) with C(gpu_count), C(devices), C(driver_version) (null when no driver is loaded)
    and C(nvidia_smi) (its path, or null).
options:
  sysfs_pci:
    description: The PCI devices directory (another tree only in tests).
    type: path
    default: /sys/bus/pci/devices
  driver_version_file:
    description: Where a loaded NVIDIA kernel module reports its version.
    type: path
    default: /proc/driver/nvidia/version
author: tinyllama-shape
"""

EXAMPLES = r"""
- name: Look for GPUs
  nvidia_gpu_facts:
"""

RETURN = r"""
ansible_facts:
  description: C(nvidia) with gpu_count, devices, driver_version, nvidia_smi.
  returned: always
  type: dict
"""

import re
import shutil
from pathlib import Path

from ansible.module_utils.basic import AnsibleModule

NVIDIA_VENDOR = "0x10de"
# PCI class 0x03xxxx: display controllers (VGA 0x0300, 3D 0x0302 as the T4 reports itself).
DISPLAY_CLASS = "0x03"
# Names of the devices AWS offers, for the report; others show their PCI id.
KNOWN = {"0x1eb8": "Tesla T4", "0x2237": "A10G", "0x27b8": "L4", "0x20b5": "A100 80GB", "0x2330": "H100 80GB"}


def _read(path: Path) -> str:
    try:
        return path.read_text(encoding="ascii").strip()
    except OSError:
        return ""


def find_gpus(sysfs_pci: str) -> list[dict[str, str]]:
    try:
        slots = sorted(Path(sysfs_pci).iterdir())
    except OSError:
        return []
    devices = []
    for base in slots:
        if _read(base / "vendor") != NVIDIA_VENDOR:
            continue
        if not _read(base / "class").startswith(DISPLAY_CLASS):
            continue  # NVIDIA's audio and USB functions on consumer cards
        device = _read(base / "device")
        devices.append({"slot": base.name, "device_id": device, "name": KNOWN.get(device, f"NVIDIA {device}")})
    return devices


def driver_version(version_file: str) -> str | None:
    match = re.search(r"Kernel Module\s+(?:for \S+\s+)?([0-9][0-9.]+)", _read(Path(version_file)))
    return match.group(1) if match else None


def main() -> None:
    module = AnsibleModule(
        argument_spec={
            "sysfs_pci": {"type": "path", "default": "/sys/bus/pci/devices"},
            "driver_version_file": {"type": "path", "default": "/proc/driver/nvidia/version"},
        },
        supports_check_mode=True,
    )
    devices = find_gpus(module.params["sysfs_pci"])
    facts = {
        "gpu_count": len(devices),
        "devices": devices,
        "driver_version": driver_version(module.params["driver_version_file"]),
        "nvidia_smi": shutil.which("nvidia-smi"),
    }
    module.exit_json(changed=False, ansible_facts={"nvidia": facts})


if __name__ == "__main__":
    main()
