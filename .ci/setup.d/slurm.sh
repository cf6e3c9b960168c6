#!/usr/bin/env bash
# The Slurm test cluster runs slurmrestd as the `slurm` system user (it refuses root). The
# slurm-wlm package creates that user; make sure it exists when the package came from elsewhere.
set -eu
if ! id slurm >/dev/null 2>&1; then
  if [ "$(id -u)" = "0" ]; then
    useradd --system --no-create-home --shell /usr/sbin/nologin slurm
  else
    echo "!!! no 'slurm' user and not root: the Slurm tests will skip (or fail with CI=true)"
  fi
fi
