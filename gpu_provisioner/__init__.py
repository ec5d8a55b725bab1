"""The embedded GPU provisioner: Kaito Machines (karpenter.sh/v1alpha5) become one-node AKS agent
pools through a small cloud-provider protocol, with a Machine lifecycle controller and a garbage
collector on the project's controller runtime. Entry point: ``gpu_provisioner.setup``; design and
configuration: docs/gpu-provisioner.md.
"""
