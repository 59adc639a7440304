#!/usr/bin/env bash
# Validates schemas/asyncapi.yaml (and the JSON Schemas it references) with the official
# AsyncAPI parser, @asyncapi/parser, and its default ruleset: fails on any error-severity
# diagnostic (e.g. an unresolvable $ref) and prints every diagnostic. The parser is installed
# into the tool cache when missing (scripts/ensure-ecosystem-tools.sh asyncapi).
# Last line: `asyncapi: PASS` or `asyncapi: FAIL`.
#
#   ASYNCAPI_FILE   the document to check (default schemas/asyncapi.yaml)
set -uo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"
FILE="${ASYNCAPI_FILE:-schemas/asyncapi.yaml}"

if ! tools="$(bash scripts/ensure-ecosystem-tools.sh asyncapi)"; then
    echo "asyncapi: FAIL (could not install @asyncapi/parser)"
    exit 1
fi
ASYNCAPI_PARSER="$(sed -n 's/^ASYNCAPI_PARSER=//p' <<<"$tools")"

if timeout 120 node scripts/ecosystem/asyncapi-parse.mjs "$ASYNCAPI_PARSER" "$FILE"; then
    echo "asyncapi: PASS"
else
    echo "asyncapi: FAIL ($FILE does not validate with @asyncapi/parser)"
    exit 1
fi
