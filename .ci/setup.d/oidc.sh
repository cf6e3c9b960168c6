#!/usr/bin/env bash
# The OpenID provider the OIDC sign-in tests start: npm's oidc-provider (pinned in
# tests/accounts/ext/oidc_provider/package-lock.json), installed when missing.
set -eu
cd "$(dirname "$0")/../../tests/accounts/ext/oidc_provider"
if ! command -v npm >/dev/null; then
  echo "!!! npm not found (Node.js 20+): the OIDC tests will skip (or fail with CI=true)"
  exit 1
fi
want="$(node -p "require('./package.json').dependencies['oidc-provider']")"
have="$(node -p "require('./node_modules/oidc-provider/package.json').version" 2>/dev/null || true)"
[ "$have" = "$want" ] && exit 0
echo "installing oidc-provider $want for the OIDC tests"
npm ci --no-audit --no-fund --loglevel=error >/dev/null
