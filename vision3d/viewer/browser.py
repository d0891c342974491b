"""A local nerfstudio viewer in headless Chromium: what the browser test and ``benchmarks/live_viewer.py`` share.

Debian's ``chromium`` and ``chromedriver`` driven through selenium (the dev extra; imported only when a browser
starts). The flags are the ones a sandboxed, offline machine needs; the host-resolver rule keeps the page's
analytics offline so that only the local viewer answers.
"""

from __future__ import annotations

import socket
import subprocess
import time

CHROMIUM_FLAGS = ("--headless", "--no-sandbox", "--disable-gpu", "--window-size=1000,700",
                  "--host-resolver-rules=MAP * ~NOTFOUND , EXCLUDE localhost , EXCLUDE 127.0.0.1")


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on now."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_for_port(port: int, process: subprocess.Popen, timeout_s: float) -> None:
    """Wait until something listens on 127.0.0.1:``port``, ``process`` exits, or ``timeout_s`` seconds pass."""
    deadline = time.monotonic() + timeout_s
    while process.poll() is None and time.monotonic() < deadline:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            return
        except OSError:
            time.sleep(1)


def headless_chromium(chromium: str = "/usr/bin/chromium", chromedriver: str = "/usr/bin/chromedriver"):  # noqa: ANN201
    """A selenium driver of headless Chromium (``CHROMIUM_FLAGS``); the caller quits it."""
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    for flag in CHROMIUM_FLAGS:
        options.add_argument(flag)
    options.binary_location = chromium
    return webdriver.Chrome(service=Service(chromedriver), options=options)
