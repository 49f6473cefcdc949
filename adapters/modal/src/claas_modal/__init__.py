"""claas-modal: CLaaS on Modal's serverless GPUs.

:mod:`claas_modal.app` defines the Modal app (deploy with
``modal deploy -m claas_modal.app``); :mod:`claas_modal.worker` holds the GPU
worker's Python body, which runs without Modal too.
"""
