"""A batch on the command line: a progress bar on a terminal (tqdm: cases done, the running case and its stage,
elapsed and remaining time), one plain line per case otherwise, or JSON lines; then a summary per case (status,
seconds, voxels per label) and the totals."""

from __future__ import annotations

import json
import sys
import time

from .case_outputs import voxel_counts

DONE, FAILED, SKIPPED = "done", "failed", "skipped"


class BatchReport:
    """Shows a batch of ``total`` cases as it goes (``skipped``, ``finished``, ``running``) and sums it up
    (``summary``). ``json_lines``: one JSON object per case and one for the totals, on ``out``."""

    def __init__(self, total: int, json_lines: bool = False, out=None, err=None):
        self._out = out or sys.stdout
        self._err = err or sys.stderr
        self._json = json_lines
        self._total = total
        self._rows = []
        self._started = time.perf_counter()
        self._bar = None if json_lines else _progress_bar(total, self._err)

    def skipped(self, case, target: str) -> None:
        self._add({"case": case.name, "status": SKIPPED, "seconds": 0.0, "outputs": [target],
                   "note": "its output exists (--skip-existing)"})

    def finished(self, outcome, written: list | None = None, error=None) -> None:
        """A case's end: ``written`` its files, or ``error`` (the outcome's, or its writing's)."""
        error = error or outcome.error
        row = {"case": outcome.case.name, "status": FAILED if error else DONE, "seconds": round(outcome.seconds, 3)}
        if error:
            row["error"] = str(error)
        else:
            result = outcome.result
            row["outputs"] = written or []
            row["voxels"] = {result.labels[value]: count for value, count in voxel_counts(result).items()}
        self._add(row)

    def running(self, in_flight: list) -> None:
        """The cases the workers run now, as ``Batch.in_flight`` gives them: (case, stage)."""
        if self._bar is None or not in_flight:
            return
        case, stage = in_flight[0]
        more = f" (+{len(in_flight) - 1} more)" if len(in_flight) > 1 else ""
        text = f"{case.name}: {stage}{more}"
        if text != self._bar.postfix:  # tqdm redraws the time on its own
            self._bar.set_postfix_str(text)

    def note(self, text: str) -> None:
        """A line for the user on stderr (above the bar, which it would otherwise break)."""
        if self._bar is not None:
            self._bar.write(f"note: {text}", file=self._err)
        else:
            print(f"note: {text}", file=self._err, flush=True)

    def close(self) -> None:
        """Take the bar away (``summary`` does it too)."""
        if self._bar is not None:
            self._bar.close()
            self._bar = None

    def _add(self, row: dict) -> None:
        self._rows.append(row)
        if self._json:
            print(json.dumps({"event": "case", **row}), file=self._out, flush=True)
            return
        line = f"[{len(self._rows)}/{self._total}] {_case_line(row)}"
        if self._bar is not None:
            self._bar.write(line, file=self._out)
            self._bar.update(1)
        else:
            print(line, file=self._out, flush=True)

    @property
    def failed(self) -> int:
        return sum(row["status"] == FAILED for row in self._rows)

    def summary(self, interrupted: bool = False) -> None:
        self.close()
        seconds = time.perf_counter() - self._started
        counts = {status: sum(row["status"] == status for row in self._rows) for status in (DONE, FAILED, SKIPPED)}
        if self._json:
            print(json.dumps({"event": "summary", "cases": self._total, **counts, "not_run": self._total -
                              len(self._rows), "seconds": round(seconds, 3), "interrupted": interrupted}),
                  file=self._out, flush=True)
            return
        width = max([len(row["case"]) for row in self._rows] + [4])
        print(f"\n{'case':{width}}  status   seconds  voxels per label", file=self._out)
        for row in self._rows:
            detail = row.get("error") or row.get("note") or ", ".join(
                f"{name} {count}" for name, count in row.get("voxels", {}).items())
            print(f"{row['case']:{width}}  {row['status']:7}  {row['seconds']:7.2f}  {detail}", file=self._out)
        rate = counts[DONE] / seconds * 60 if seconds > 0 else 0.0
        not_run = f", {self._total - len(self._rows)} not run (interrupted)" if interrupted else ""
        print(f"{self._total} cases: {counts[DONE]} done, {counts[FAILED]} failed, {counts[SKIPPED]} skipped"
              f"{not_run} in {seconds:.1f} s ({rate:.1f} cases a minute)", file=self._out, flush=True)


def _case_line(row: dict) -> str:
    if row["status"] == FAILED:
        return f"FAILED {row['case']}: {row['error']}"
    if row["status"] == SKIPPED:
        return f"skipped {row['case']}: {row['note']}"
    return f"done {row['case']} -> {', '.join(row['outputs'])} in {row['seconds']:.2f} s"


def _progress_bar(total: int, stream):
    """tqdm's bar on a terminal; None elsewhere (a log file gets one line per case) or without tqdm."""
    if not getattr(stream, "isatty", lambda: False)():
        return None
    try:
        from tqdm import tqdm
    except ImportError:
        return None
    return tqdm(total=total, unit="case", file=stream, dynamic_ncols=True, leave=True)
