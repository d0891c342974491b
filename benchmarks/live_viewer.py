"""How often the live viewer refreshes during ``ns-train --vis viewer`` on CPU, seen from a headless browser.

Starts ``ns-train METHOD --vis viewer`` on the bundled scene, opens the viewer in headless Chromium (Debian's
``chromium`` + ``chromium-driver``, selenium), waits for the first frame, then for ``--seconds`` reads the
control panel's "Step: N" (nerfstudio updates it at each refresh during training) and prints the number of
refreshes, the seconds and training steps between them, and the training speed. Run it with
``PYTHONPATH`` pointing at the checkout to measure (e.g. main before and after a change to the refresh rule).

    NUMBA_NUM_THREADS=1 nice -n 15 python benchmarks/live_viewer.py --method det-gs --seconds 90
"""

from __future__ import annotations

import argparse
import itertools
import os
import re
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from vision3d.data.bundled import bundled_scene_path
from vision3d.viewer.browser import free_port, headless_chromium, wait_for_port


def _stats(driver) -> tuple[int | None, str | None]:  # noqa: ANN001
    from selenium.webdriver.common.by import By

    text = driver.find_element(By.TAG_NAME, "body").text
    step, res = re.search(r"Step: (\d+)", text), re.search(r"Resolution: (\d+x\d+)px", text)
    return (int(step.group(1)) if step else None), (res.group(1) if res else None)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--method", default="det-gs")
    parser.add_argument("--seconds", type=float, default=90.0)
    parser.add_argument("--max-steps", type=int, default=30000)
    args = parser.parse_args()
    from selenium.webdriver.support.ui import WebDriverWait

    port = free_port()
    out = Path(tempfile.mkdtemp())
    ns_train = Path(sys.executable).parent / "ns-train"
    log = (out / "ns-train.log").open("w")
    trainer = subprocess.Popen(
        [str(ns_train), args.method, "--data", str(bundled_scene_path()), "--vis", "viewer", "--output-dir", str(out),
         "--max-num-iterations", str(args.max_steps), "--viewer.websocket-port", str(port),
         "--viewer.websocket-host", "127.0.0.1", "--machine.device-type", "cpu"],
        stdout=log, stderr=subprocess.STDOUT, env={**os.environ, "OMP_NUM_THREADS": "1"})
    driver = None
    try:
        wait_for_port(port, trainer, timeout_s=300)
        driver = headless_chromium()
        driver.get(f"http://127.0.0.1:{port}")
        WebDriverWait(driver, 300, 0.5).until(lambda d: _stats(d)[1] is not None)
        seen = []  # (seconds, step) at each change of the shown step
        start = time.monotonic()
        while time.monotonic() - start < args.seconds:
            step, _ = _stats(driver)
            if step is not None and (not seen or step != seen[-1][1]):
                seen.append((time.monotonic() - start, step))
            time.sleep(0.2)
        final_step, res = _stats(driver)
    finally:
        if driver is not None:
            driver.quit()
        trainer.terminate()
        trainer.wait(60)
        log.close()
    gaps_s = [b[0] - a[0] for a, b in itertools.pairwise(seen)]
    gaps_steps = [b[1] - a[1] for a, b in itertools.pairwise(seen)]
    steps_per_s = (seen[-1][1] - seen[0][1]) / max(seen[-1][0] - seen[0][0], 1e-9) if len(seen) > 1 else float("nan")
    print(f"\n{args.method}, {args.seconds:.0f} s watched, last frame {res}, PYTHONPATH={os.environ.get('PYTHONPATH', '')}")
    print("| refreshes | s between (median) | steps between (median) | train steps/s |")
    print("|---|---|---|---|")
    median = lambda values: f"{statistics.median(values):.1f}" if values else "-"  # noqa: E731
    print(f"| {len(seen)} | {median(gaps_s)} | {median(gaps_steps)} | {steps_per_s:.2f} |")


if __name__ == "__main__":
    main()
