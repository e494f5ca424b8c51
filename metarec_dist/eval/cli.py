"""stub"""
import argparse


def add_evaluate_args(parser: argparse.ArgumentParser) -> None:
    pass


def add_recommend_args(parser: argparse.ArgumentParser) -> None:
    pass


def evaluate_main(args: argparse.Namespace) -> int:
    return 0


def recommend_main(args: argparse.Namespace) -> int:
    return 0
