#!/bin/sh
exec vlserve launch "$@"
