"""A link the test can cut: a network namespace joined to the host by a veth
pair on a private /30, made by the test and removed after it, even when it fails.

A worker started inside the namespace (`Partition.prefix`) reaches a server
listening on `host_address` over that pair only. Cutting sets the
namespace's end down: inside, the route to the server is gone (connects fail
at once, sends are retried by TCP); on the host the pair's route stays, marked
linkdown, so nothing meant for the worker leaves by the default route. No
traffic leaves the machine either way. Needs root (`ip netns add`): without
it the test skips, except under CI=true, where it fails.
"""

from __future__ import annotations

import contextlib
import ipaddress
import os
import random
import subprocess
import uuid
from collections.abc import Iterator
from dataclasses import dataclass

import pytest

SUBNETS = ipaddress.IPv4Network("10.213.0.0/16")


@dataclass(frozen=True)
class Partition:
    """A namespace and its link to the host."""

    namespace: str
    host_link: str
    inner_link: str
    host_address: str  # the host's end: where the server listens
    inner_address: str  # the namespace's end

    @property
    def prefix(self) -> tuple[str, ...]:
        """What runs a command inside the namespace."""
        return ("ip", "netns", "exec", self.namespace)

    def cut(self) -> None:
        _ip("netns", "exec", self.namespace, "ip", "link", "set", self.inner_link, "down")

    def heal(self) -> None:
        _ip("netns", "exec", self.namespace, "ip", "link", "set", self.inner_link, "up")


@contextlib.contextmanager
def partition() -> Iterator[Partition]:
    """A fresh namespace and veth pair, named uniquely for this test."""
    tag = uuid.uuid4().hex[:8]
    namespace, host_link, inner_link = f"zbchaos-{tag}", f"zbh{tag}", f"zbn{tag}"
    try:
        made = subprocess.run(["ip", "netns", "add", namespace], capture_output=True, text=True)
        problem = made.stderr.strip() if made.returncode else ""
    except FileNotFoundError:
        problem = "the ip command is not installed"
    if problem:
        reason = f"cannot make a network namespace here: {problem}"
        if os.environ.get("CI") == "true":
            pytest.fail(f"{reason} (under CI this test must run)")
        pytest.skip(reason)
    try:
        _ip("link", "add", host_link, "type", "veth", "peer", "name", inner_link)
        _ip("link", "set", inner_link, "netns", namespace)
        host, inner = _unused_pair()
        _ip("addr", "add", f"{host}/30", "dev", host_link)
        _ip("link", "set", host_link, "up")
        inside = ("netns", "exec", namespace, "ip")
        _ip(*inside, "addr", "add", f"{inner}/30", "dev", inner_link)
        _ip(*inside, "link", "set", inner_link, "up")
        _ip(*inside, "link", "set", "lo", "up")
        yield Partition(namespace, host_link, inner_link, str(host), str(inner))
    finally:
        # Deleting one end of a veth pair deletes both; the namespace goes
        # once the processes in it are gone.
        subprocess.run(["ip", "link", "del", host_link], capture_output=True)
        subprocess.run(["ip", "netns", "del", namespace], capture_output=True)


def _unused_pair() -> tuple[ipaddress.IPv4Address, ipaddress.IPv4Address]:
    """The two addresses of a random /30 of 10.213.0.0/16 that no interface uses
    (tried again on a clash, as with another run of this suite at the same time)."""
    in_use = subprocess.run(["ip", "-o", "-4", "addr", "show"], capture_output=True, text=True)
    taken = {
        ipaddress.IPv4Interface(word).network
        for line in in_use.stdout.splitlines()
        for word in line.split()
        if "/" in word and word[0].isdigit()
    }
    for _ in range(100):
        start = int(SUBNETS.network_address) + 4 * random.randrange(SUBNETS.num_addresses // 4)
        subnet = ipaddress.IPv4Network((start, 30))
        if not any(subnet.overlaps(other) for other in taken):
            host, inner = list(subnet.hosts())
            return host, inner
    raise AssertionError(f"no free /30 in {SUBNETS}")


def _ip(*args: str) -> None:
    done = subprocess.run(["ip", *args], capture_output=True, text=True)
    if done.returncode != 0:
        raise AssertionError(f"ip {' '.join(args)}: {done.stderr.strip()}")
