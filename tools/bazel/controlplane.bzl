"""The test control plane (etcd, kube-apiserver, kube-controller-manager) for `bazel test`.

A repository rule runs tools/controlplane/build.sh, the one recipe `make controlplane` and
the Cargo tests use: it builds the pinned Go modules with the Go toolchain on PATH into
the cache outside the checkout (`~/.cache/setpoint/controlplane/<versions>/`), so Cargo
and Bazel share one build. rules_go would make Bazel build the whole Kubernetes module
graph itself (gazelle-generated repositories for ~300 Go modules and a Go SDK download);
RFD 0001 ("Language and build") argues the choice.
"""

def _controlplane_impl(rctx):
    # Reading the pins through labels makes Bazel refetch when a version changes.
    for pin in ["kubernetes/go.mod", "kubernetes/go.sum", "etcd/go.mod", "etcd/go.sum"]:
        rctx.path(Label("//:tools/controlplane/" + pin))
    script = rctx.path(Label("//:tools/controlplane/build.sh"))
    rctx.report_progress("building etcd, kube-apiserver, kube-controller-manager " +
                         "(about 9 min cold on 2 cores; cached afterwards)")
    result = rctx.execute(["bash", str(script)], timeout = 3600, quiet = False)
    if result.return_code != 0:
        fail("tools/controlplane/build.sh failed (exit %d):\n%s" % (result.return_code, result.stderr))
    rctx.symlink(result.stdout.strip(), "bin")
    rctx.file("BUILD.bazel", """\
# The directory of the three binaries: testenv reads it from SETPOINT_CONTROLPLANE_DIR.
filegroup(
    name = "binaries",
    srcs = ["bin"],
    visibility = ["//visibility:public"],
)
""")

controlplane_binaries = repository_rule(
    implementation = _controlplane_impl,
    # build.sh's inputs from the environment: Go, its caches and proxy, and our cache.
    environ = ["PATH", "HOME", "GOPATH", "GOMODCACHE", "GOCACHE", "GOPROXY", "GOFLAGS", "SETPOINT_CACHE", "XDG_CACHE_HOME"],
    local = True,
)

def _controlplane_extension_impl(module_ctx):
    controlplane_binaries(name = "controlplane")
    return module_ctx.extension_metadata(reproducible = True)

controlplane = module_extension(implementation = _controlplane_extension_impl)

# For a test that starts the control plane (tools/testenv): the binaries in its runfiles,
# and their directory in the variable testenv reads.
CONTROLPLANE_DATA = ["@controlplane//:binaries"]
CONTROLPLANE_ENV = {"SETPOINT_CONTROLPLANE_DIR": "$(rootpath @controlplane//:binaries)"}
