"""Feed and recommendation ids cut from blocks of the OS's random bytes: distinct, URL-safe, not shared with a
forked child."""

from __future__ import annotations

import os
import re

from appliance import tokens
from appliance.tokens import token_urlsafe


def test_ids_are_url_safe_of_the_asked_length_and_distinct_across_many_blocks() -> None:
    made = [token_urlsafe(9) for _ in range(3 * tokens.BLOCK)]  # ~27 blocks of 4 KiB
    assert len(set(made)) == len(made)
    assert all(re.fullmatch(r"[A-Za-z0-9_-]{12}", t) for t in made)
    assert re.fullmatch(r"[A-Za-z0-9_-]{16}", token_urlsafe(12))
    big = token_urlsafe(tokens.BLOCK + 5)  # more than a block at once
    assert len(big) == -(-4 * (tokens.BLOCK + 5) // 3) and big != token_urlsafe(tokens.BLOCK + 5)


def test_a_forked_child_does_not_cut_the_ids_its_parent_cuts() -> None:
    token_urlsafe(9)  # the parent holds a block with bytes left
    read, write = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child: its next id, then out at once
        os.write(write, token_urlsafe(9).encode())
        os._exit(0)
    os.close(write)
    os.waitpid(pid, 0)
    child = os.read(read, 64).decode()
    os.close(read)
    assert len(child) == 12 and child != token_urlsafe(9)
