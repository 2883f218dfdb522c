#!/usr/bin/python
"""Ansible module: keep a Mosquitto password file equal to a set of users, idempotently.

The PBKDF2 hashing repeats ``cloud_hub.security.broker_auth.hash_password``/``verify_password``
on purpose: a module runs on the broker host, where the project is not installed, so it
must stand alone. tests/fleet proves both agree: devices log in to a Mosquitto whose
password file this module wrote.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import os
import re
import secrets
import tempfile

from ansible.module_utils.basic import AnsibleModule

DOCUMENTATION = r"""
---
module: mosquitto_passwd
short_description: Keep a Mosquitto 2 password file in line with a set of users
description:
  - Writes one C($7$) (PBKDF2-SHA512) line per user, as C(mosquitto_passwd) and
    C(cloud-hub device add) do.
  - A user whose stored hash already verifies the given password keeps its line, so a
    second run changes nothing; a new or rotated password gets a fresh salt.
  - With O(exclusive), users not listed are removed (a retired device loses its access).
options:
  path:
    description: The password file.
    type: path
    required: true
  users:
    description: User name to password.
    type: dict
    required: true
  exclusive:
    description: Remove users that are not in O(users).
    type: bool
    default: true
extends_documentation_fragment: [files]
author: audience-edge
"""

EXAMPLES = r"""
- name: Devices and the hub may log in
  mosquitto_passwd:
    path: /etc/mosquitto/audience/passwd
    users: {hub: "{{ vault_hub_password }}", cam-0001: "{{ vault_cam_0001 }}"}
    owner: root
    group: mosquitto
    mode: "0640"
  no_log: true
"""

RETURN = r"""
added:
  description: Users that were not in the file.
  type: list
  returned: always
updated:
  description: Users whose password changed.
  type: list
  returned: always
removed:
  description: Users removed (O(exclusive)).
  type: list
  returned: always
"""


ITERATIONS = 101  # mosquitto_passwd's default for $7$
NAME = re.compile(r"^[^:\s#+/]{1,64}$")


def hash_password(password: str) -> str:
    salt = secrets.token_bytes(12)
    digest = hashlib.pbkdf2_hmac("sha512", password.encode(), salt, ITERATIONS)
    salt64, digest64 = base64.b64encode(salt).decode(), base64.b64encode(digest).decode()
    return f"$7${ITERATIONS}${salt64}${digest64}"


def verifies(encoded: str, password: str) -> bool:
    parts = encoded.split("$")
    if len(parts) != 5 or parts[1] != "7":
        return False
    try:
        iterations = int(parts[2])
        salt, expected = base64.b64decode(parts[3]), base64.b64decode(parts[4])
    except ValueError:
        return False
    digest = hashlib.pbkdf2_hmac("sha512", password.encode(), salt, iterations)
    return hmac.compare_digest(digest, expected)


def main() -> None:
    module = AnsibleModule(
        argument_spec={
            "path": {"type": "path", "required": True},
            "users": {"type": "dict", "required": True, "no_log": True},
            "exclusive": {"type": "bool", "default": True},
        },
        add_file_common_args=True,
        supports_check_mode=True,
    )
    path = module.params["path"]
    users = {str(k): str(v) for k, v in module.params["users"].items()}
    bad = [name for name in users if not NAME.match(name)]
    if bad:
        module.fail_json(msg=f"invalid user names: {', '.join(bad)}")
    current = {}
    order = []
    if os.path.exists(path):
        with open(path, encoding="utf-8") as handle:
            for line in handle:
                line = line.rstrip("\n")
                if not line or line.startswith("#") or ":" not in line:
                    continue
                name, encoded = line.split(":", 1)
                current[name] = encoded
                order.append(name)
    added, updated, removed = [], [], []
    result = {}
    for name in order:
        if name in users:
            if verifies(current[name], users[name]):
                result[name] = current[name]
            else:
                result[name] = hash_password(users[name])
                updated.append(name)
        elif module.params["exclusive"]:
            removed.append(name)
        else:
            result[name] = current[name]
    for name in sorted(users):
        if name not in result:
            result[name] = hash_password(users[name])
            added.append(name)
    changed = bool(added or updated or removed) or not os.path.exists(path)
    if changed and not module.check_mode:
        directory = os.path.dirname(path) or "."
        fd, tmp = tempfile.mkstemp(dir=directory, prefix=".passwd.")
        with os.fdopen(fd, "w", encoding="utf-8") as handle:
            handle.write("".join(f"{n}:{e}\n" for n, e in result.items()))
        module.atomic_move(tmp, path)
    file_args = module.load_file_common_arguments(module.params)
    if os.path.exists(path):
        changed = module.set_fs_attributes_if_different(file_args, changed)
    module.exit_json(changed=changed, added=added, updated=updated, removed=removed)


if __name__ == "__main__":
    main()
