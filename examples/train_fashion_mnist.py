#!/usr/bin/python3
"""A small CNN trained on Fashion-MNIST for a few hundred steps, fed by ferry.

Shows ferry in a real PyTorch training loop: uint8 images straight from the loader's pooled
buffers, converted on the fly, the loader's report at the end.

    PYTHONPATH=python /usr/bin/python3 examples/train_fashion_mnist.py data/fashion-mnist-train.ferry \
        data/fashion-mnist-test.ferry [--steps 300]
"""
import argparse
import os
import sys
import time

import torch
from torch import nn

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "python"))
import ferry  # noqa: E402


def model():
    return nn.Sequential(
        nn.Conv2d(1, 16, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
        nn.Conv2d(16, 32, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
        nn.Flatten(), nn.Linear(32 * 7 * 7, 10))


def as_input(images):
    return images.unsqueeze(1).float().div_(255.0)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("train")
    ap.add_argument("test")
    ap.add_argument("--steps", type=int, default=300)
    ap.add_argument("--batch-size", type=int, default=128)
    a = ap.parse_args()
    torch.manual_seed(0)
    torch.set_num_threads(1)  # leave the other core to ferry's workers on a 2-core machine
    net = model()
    opt = torch.optim.Adam(net.parameters(), lr=2e-3)
    loss_fn = nn.CrossEntropyLoss()
    loader = ferry.Loader(a.train, batch_size=a.batch_size, order="quasi_random", seed=0, drop_last=True,
                          num_threads=1)
    step, t0 = 0, time.perf_counter()
    while step < a.steps:
        for batch in loader:
            loss = loss_fn(net(as_input(batch["image"])), batch["label"].long())
            opt.zero_grad()
            loss.backward()
            opt.step()
            step += 1
            if step % 100 == 0:
                print(f"  step {step:4d}  loss {loss.item():.3f}  ({step / (time.perf_counter() - t0):.0f} steps/s)")
            if step == a.steps:
                break
    correct = total = 0
    net.eval()
    with torch.no_grad():
        for batch in ferry.Loader(a.test, batch_size=1000, order="sequential"):
            correct += (net(as_input(batch["image"])).argmax(1) == batch["label"].long()).sum().item()
            total += len(batch["label"])
    print(f"  test accuracy after {step} steps: {100 * correct / total:.1f}% ({total} images)")
    print("  loader report for the training run:")
    print("    " + loader.report().replace("\n", "\n    ").rstrip())


if __name__ == "__main__":
    main()
