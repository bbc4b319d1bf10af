"""Datasets as uint8 image tensors or integer code maps: readers of the published formats and of
numpy arrays (memory-mapped), download, quantization."""

from .datasets import DATASET_INFO, ImageDataset, list_datasets, load_dataset, quantize

__all__ = ["DATASET_INFO", "ImageDataset", "list_datasets", "load_dataset", "quantize"]
