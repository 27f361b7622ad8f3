// The pod sandbox ("pause") program of the local node: no dependencies, built static by
// scripts/k8s/build.sh into a from-scratch image set as containerd's sandbox_image.
module servicecall.local/k8s/pause

go 1.24.0
