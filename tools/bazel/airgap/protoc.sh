#!/bin/sh
# Debian's protoc (protobuf-compiler), for proto_library under --config=airgap.
exec /usr/bin/protoc "$@"
