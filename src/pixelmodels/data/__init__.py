"""Datasets as uint8 tensors: readers of the published formats, download, quantization."""

from .datasets import DATASET_INFO, ImageDataset, list_datasets, load_dataset, quantize

__all__ = ["DATASET_INFO", "ImageDataset", "list_datasets", "load_dataset", "quantize"]
