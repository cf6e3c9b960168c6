"""Loaded only by the ``stcloud serve`` processes of ``tests/jobs/test_crash_submit.py`` (their
PYTHONPATH starts with this directory): stops a submit at one step so the test can kill -9 the
server exactly there. Inert unless ``STCLOUD_TEST_PAUSE_AT`` is set; nothing here ships.

* ``package``: the archive's temp file gets its first bytes, then the submit stops (a
  half-written archive is on disk when the process dies);
* ``record``: the provider created the job and answered, and the submit stops before
  recording it on the job row.

The step reached is announced by ``<STCLOUD_TEST_PAUSE_DIR>/<step>.reached``.
"""
import os

_STEP = os.environ.get("STCLOUD_TEST_PAUSE_AT")

if _STEP:
    import time
    from pathlib import Path

    _MARKER = Path(os.environ["STCLOUD_TEST_PAUSE_DIR"]) / f"{_STEP}.reached"

    def _pause():
        _MARKER.write_text(str(os.getpid()))
        while True:  # until the test kills this process
            time.sleep(60)

    if _STEP == "package":
        from stcloud.packaging import archive as _archive

        def _write_zip(fp, *args, **kwargs):
            fp.write(b"PK\x03\x04 the first bytes of an archive")
            fp.flush()
            _pause()

        _archive._write_zip = _write_zip
    elif _STEP == "record":
        from stcloud.jobs import submit as _submit

        def _record_launch(*args, **kwargs):
            _pause()

        _submit._record_launch = _record_launch
    else:
        raise SystemExit(f"STCLOUD_TEST_PAUSE_AT={_STEP!r}: expected package or record")
