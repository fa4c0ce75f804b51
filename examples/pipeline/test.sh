#!/bin/sh
# The pipeline's test stage runs this file. Make it fail (`exit 1`), commit, and run the
# pipeline: it stops here, and nothing is deployed.
set -e
echo "checking the project file"
test -f slipway.toml
echo "checking the build output"
test -f dist/built-at.txt
echo "all tests passed"
