# The local node's and Molecule's connection: containers.podman's `podman` with Ansible's pipelining.
#
# The collection's plugin turns pipelining off because it runs `podman exec` without `-i`, so the module sent on
# stdin never arrives (containers/ansible-podman-collections#275). With `-i` it does, and each task is one
# `podman exec` (the module on stdin) instead of three (make a temporary directory; run the module copied into
# it through the container's mount; remove it). A `podman exec` costs about 0.2 s on the 2-core build machines:
# the converges of `make test` run a few thousand tasks. ansible.cfg names this directory (connection_plugins).
from __future__ import annotations

import shlex
from typing import Any

from ansible.plugins.connection import ensure_connect
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

    @ensure_connect  # type: ignore[untyped-decorator]
    def exec_command(self, cmd: str, in_data: bytes | None = None, sudoable: bool = False) -> Any:
        if in_data is None:
            return super().exec_command(cmd, in_data=in_data, sudoable=sudoable)
        exec_args = ["exec", "-i", *(("--user", self.user) if self.user else ())]
        return self._podman(exec_args, shlex.split(cmd), in_data)
