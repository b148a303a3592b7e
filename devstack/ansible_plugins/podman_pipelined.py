# The local node's and Molecule's connection: containers.podman's `podman` with Ansible's pipelining.
#
# The collection's plugin turns pipelining off because it runs `podman exec` without `-i`, so the module sent on
# stdin never arrives (containers/ansible-podman-collections#275). With `-i` it does, and each task is one
# `podman exec` (the module on stdin) instead of five and a copy (the home directory, a temporary directory, the
# module copied into it, a chmod, the run, the clean-up). A `podman exec` costs about 0.2 s on the 2-core build
# machines: the converges of `make test` run a few thousand tasks. ansible.cfg names this directory
# (connection_plugins).
from __future__ import annotations

from typing import Any

from ansible_collections.containers.podman.plugins.connection.podman import Connection as PodmanConnection

DOCUMENTATION = """
    name: podman_pipelined
    short_description: containers.podman.podman, with pipelining
    description:
        - containers.podman.podman's connection, with the module sent on the stdin of C(podman exec -i).
    options:
      remote_addr:
        description: The ID of the container you want to access.
        default: inventory_hostname
        vars:
          - name: ansible_host
          - name: inventory_hostname
          - name: ansible_podman_host
      remote_user:
        description: The user that runs the commands inside the container.
        ini:
          - section: defaults
            key: remote_user
        env:
          - name: ANSIBLE_REMOTE_USER
        vars:
          - name: ansible_user
      podman_extra_args:
        description: Extra arguments to pass to the podman command line.
        default: ''
        vars:
          - name: ansible_podman_extra_args
      podman_executable:
        description: Executable for podman command.
        default: podman
        vars:
          - name: ansible_podman_executable
      pipelining:
        description: Send the module on stdin instead of copying it into the container first.
        type: boolean
        default: true
        vars:
          - name: ansible_pipelining
"""


class Connection(PodmanConnection):  # type: ignore[misc]
    transport = "podman_pipelined"
    has_pipelining = True

    def _podman(
        self, cmd: Any, cmd_args: Any = None, in_data: bytes | None = None, use_container_id: bool = True
    ) -> Any:
        """The collection's runner, with ``-i`` on an ``exec`` that has something for stdin."""
        if in_data is not None and isinstance(cmd, list) and cmd[:1] == ["exec"]:
            cmd = ["exec", "-i", *cmd[1:]]
        return super()._podman(cmd, cmd_args, in_data, use_container_id)
