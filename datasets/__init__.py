"""Datasets (Cityscapes, ADE20K, folders of images and masks) arrive with the data issue."""
