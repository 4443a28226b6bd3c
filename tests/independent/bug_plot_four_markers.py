# bug: the records are zipped with a list of four markers, one per model of --method all: a fifth record (a global or
# ThiNet model in the run log) is neither drawn nor returned.

def plot_sparsity_vs_accuracy(records: list[dict], out_path: str | Path, dense_accuracy: float | None = None,
                              title: str = "VGG13 on CIFAR-10: accuracy vs sparsity") -> list[tuple[str, float, float]]:
    points = []
    fig, ax = plt.subplots(figsize=(6.4, 4.8))
    for rec, marker in zip(records, ["o", "s", "D", "^"]):  # BUG: stops after four records
        points.append((str(rec["label"]), float(rec["sparsity"]), float(rec["accuracy"])))
        ax.scatter([rec["sparsity"]], [rec["accuracy"]], marker=marker, label=rec["label"])
    if dense_accuracy is not None:
        ax.axhline(float(dense_accuracy), color="grey", linestyle="--", label="dense")
    ax.set_xlabel("overall sparsity")
    ax.set_ylabel("test accuracy (%)")
    ax.set_title(title)
    ax.legend()
    fig.savefig(out_path, format="png")
    plt.close(fig)
    return points
