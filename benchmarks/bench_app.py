"""The app as a user feels it: idle CPU, launch to the first Library table, Combine slider to numbers.

``python -m benchmarks.bench_app [--idle-s 30] [--launches 3] [--moves 3] [--out benchmarks/results/app.json]``

Every figure is taken on a real ``streamlit run app.py`` (the project's own ``.streamlit/config.toml``),
the timed ones in headless Chromium (selenium), on the store in ``$TPV_STORE`` or ``data/zoo``:

- **idle CPU**: the server's CPU seconds (utime + stime of the process and its threads, /proc) over three
  windows of ``--idle-s`` seconds after its health check answers, with no browser; then the same with one
  browser tab open on the Library page and left alone (the first windows include the one-off UMAP
  warm-up, which starts 20 s after launch), and with the tab but no warm-up (``TPV_NO_WARMUP=1``).
  Reported in % of one core.
- **launch to the first Library table**: from starting the server process to a Library table on screen in
  the browser (a fresh server each time: ``--launches`` runs, median).
- **slider to numbers (MiniLM)**: on Combine, a weight slider moved with the keyboard (arrow key: a
  release), timed in the browser until the first running estimate of the new weights is on screen, and
  until the whole validation split is scored (``TPV_COMBINE_ROWS=all``). ``--moves`` moves, median.

The machine is shared: the load average is recorded before and after; medians only.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import socket
import statistics
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
CHROME_ARGS = ["--headless=new", "--no-sandbox", "--disable-gpu", "--no-first-run", "--disable-background-networking",
               "--disable-component-update", "--disable-sync", "--disable-dev-shm-usage", "--window-size=1440,1200"]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def cpu_seconds(pid: int) -> float:
    """utime + stime of a process (all its threads), in seconds."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    ticks = os.sysconf("SC_CLK_TCK")
    return (int(fields[11]) + int(fields[12])) / ticks


def load_average() -> list[float]:
    return [round(x, 2) for x in os.getloadavg()]


class Server:
    """``streamlit run app.py`` on a free port (the project's config: no file watcher)."""

    def __init__(self, env: dict[str, str] | None = None):
        self.port = _free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.env = {**os.environ, "HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false",
                    **(env or {})}
        self.proc: subprocess.Popen | None = None
        self.started = 0.0

    def start(self) -> "Server":
        self.started = time.perf_counter()
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "streamlit", "run", "app.py", "--server.headless", "true", "--server.port",
             str(self.port), "--server.address", "127.0.0.1"],
            cwd=ROOT, env=self.env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        return self

    def wait_healthy(self, timeout: float = 120) -> float:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                if urllib.request.urlopen(f"{self.url}/_stcore/health", timeout=2).read().strip() == b"ok":
                    return time.perf_counter() - self.started
            except OSError:
                time.sleep(0.05)
            if self.proc.poll() is not None:
                raise RuntimeError(f"streamlit exited with {self.proc.returncode}")
        raise RuntimeError("streamlit did not become healthy")

    def stop(self) -> None:
        if self.proc is not None:
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()


def browser():
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    opts = webdriver.ChromeOptions()
    opts.binary_location = shutil.which("chromium") or shutil.which("chromium-browser")
    for a in CHROME_ARGS:
        opts.add_argument(a)
    d = webdriver.Chrome(options=opts, service=Service(shutil.which("chromedriver")))
    d.set_page_load_timeout(120)
    return d


def _has(d, css: str) -> bool:
    from selenium.webdriver.common.by import By

    return bool(d.find_elements(By.CSS_SELECTOR, css))


def _script_state(d) -> str:
    return d.execute_script("const a = document.querySelector('[data-testid=stApp]');"
                            "return a ? a.getAttribute('data-test-script-state') : ''") or ""


def idle_cpu(seconds: float, with_tab: bool, n_windows: int = 3, warmup: bool = True) -> dict:
    srv = Server({} if warmup else {"TPV_NO_WARMUP": "1"}).start()
    d = None
    try:
        srv.wait_healthy()
        if with_tab:
            d = browser()
            d.get(srv.url)
            deadline = time.monotonic() + 120
            while time.monotonic() < deadline and not _has(d, '[data-testid="stDataFrame"]'):
                time.sleep(0.2)
            time.sleep(3)  # the page settles (warm-up delay still running: it only waits)
        windows = []
        for _ in range(n_windows):  # the first windows hold the one-off UMAP warm-up (it starts 20 s after launch)
            before = cpu_seconds(srv.proc.pid)
            time.sleep(seconds)
            used = cpu_seconds(srv.proc.pid) - before
            windows.append({"cpu_s": round(used, 3), "pct_of_one_core": round(100 * used / seconds, 2)})
        return {"window_s": seconds, "windows": windows, "browser_tab_open": with_tab, "umap_warmup": warmup}
    finally:
        if d is not None:
            d.quit()
        srv.stop()


def launch_to_library_table(d) -> dict:
    srv = Server({"TPV_NO_WARMUP": os.environ.get("TPV_NO_WARMUP", "")}).start()
    try:
        healthy = srv.wait_healthy()
        d.get(srv.url)
        while not _has(d, '[data-testid="stDataFrame"]'):
            if time.perf_counter() - srv.started > 180:
                raise RuntimeError("no Library table within 180 s")
            time.sleep(0.02)
        table = time.perf_counter() - srv.started
        return {"health_s": round(healthy, 3), "first_table_s": round(table, 3)}
    finally:
        srv.stop()


def slider_to_numbers(d, moves: int) -> dict:
    from selenium.webdriver.common.action_chains import ActionChains
    from selenium.webdriver.common.by import By
    from selenium.webdriver.common.keys import Keys

    srv = Server({"TPV_COMBINE_ROWS": "all", "TPV_NO_WARMUP": "1"}).start()
    pattern = re.compile(r"first estimate after ([0-9.]+) s")
    try:
        srv.wait_healthy()
        d.get(f"{srv.url}/combine")

        def captions() -> str:
            return d.execute_script("return Array.from(document.querySelectorAll('[data-testid=stCaptionContainer]'))"
                                    ".map(e => e.innerText).join(' ')") or ""

        def settled(timeout: float = 600) -> None:
            deadline = time.monotonic() + timeout
            while time.monotonic() < deadline:
                if "full validation split" in captions() and _script_state(d) == "notRunning":
                    return
                time.sleep(0.05)
            raise RuntimeError("the Combine page never finished the full split")

        settled()  # model load, tokenisation, the single-task scores: once per process
        rows = []
        for move in range(moves):
            sliders = d.find_elements(By.CSS_SELECTOR, '[data-testid="stSlider"] input[type="range"]')
            before = pattern.search(captions())
            before = before.group(1) if before else None
            d.execute_script("arguments[0].focus()", sliders[move % len(sliders)])
            t0 = time.perf_counter()
            ActionChains(d).send_keys(Keys.ARROW_LEFT).perform()
            first = None
            while time.perf_counter() - t0 < 600:
                text = captions()
                m = pattern.search(text)
                if first is None and m and m.group(1) != before:
                    first = time.perf_counter() - t0
                if first is not None and "full validation split" in text and _script_state(d) == "notRunning":
                    break
                time.sleep(0.01)
            full = time.perf_counter() - t0
            rows_total = re.search(r"full validation split: (\d+) rows", captions())
            rows.append({"first_s": round(first, 3), "full_s": round(full, 3),
                         "rows": int(rows_total.group(1)) if rows_total else None})
            time.sleep(1.0)
        return {"moves": rows, "first_median_s": statistics.median(r["first_s"] for r in rows),
                "full_median_s": statistics.median(r["full_s"] for r in rows)}
    finally:
        srv.stop()


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--idle-s", type=float, default=30.0)
    ap.add_argument("--launches", type=int, default=3)
    ap.add_argument("--moves", type=int, default=3)
    ap.add_argument("--skip", nargs="*", default=[], choices=["idle", "launch", "slider"])
    ap.add_argument("--out", default=None, help="write the results as JSON here too")
    args = ap.parse_args(argv)
    from benchmarks.common import cpu_model

    out: dict = {"machine": {"cpu": cpu_model(), "cores": os.cpu_count(), "shared": True,
                             "load_before": load_average()},
                 "store": os.environ.get("TPV_STORE") or str(ROOT / "data" / "zoo")}
    if "idle" not in args.skip:
        out["idle_cpu"] = [idle_cpu(args.idle_s, with_tab=False), idle_cpu(args.idle_s, with_tab=True),
                           idle_cpu(args.idle_s, with_tab=True, n_windows=2, warmup=False)]
        print(json.dumps({"idle_cpu": out["idle_cpu"]}), flush=True)
    d = browser() if {"launch", "slider"} - set(args.skip) else None
    try:
        if "launch" not in args.skip:
            runs = [launch_to_library_table(d) for _ in range(args.launches)]
            out["launch_to_library_table"] = {"runs": runs,
                                              "median_s": statistics.median(r["first_table_s"] for r in runs)}
            print(json.dumps({"launch_to_library_table": out["launch_to_library_table"]}), flush=True)
        if "slider" not in args.skip:
            out["combine_slider_minilm"] = slider_to_numbers(d, args.moves)
            print(json.dumps({"combine_slider_minilm": out["combine_slider_minilm"]}), flush=True)
    finally:
        if d is not None:
            d.quit()
    out["machine"]["load_after"] = load_average()
    print(json.dumps(out, indent=1))
    if args.out:
        Path(args.out).write_text(json.dumps(out, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
