"""Modality adapters: flow/, mdlm/, tts/, mllm/, text/."""
