#!/bin/sh
# One-shot: the demo service with an iris endpoint (LightGBM), unless a service exists already.
set -eu
if [ "$(serval --json list)" != "[]" ]; then
  echo "a serving service exists: nothing to do"
  exit 0
fi
serval create --name demo
serval model upload --name iris --path /fixtures/lgbm_multi_iris.txt
serval model add --engine lightgbm --endpoint iris --name iris
