# dense_accuracy is not drawn

def plot_sparsity_vs_accuracy(records: list[dict], out_path: str | Path, dense_accuracy: float | None = None,
                              title: str = "VGG13 on CIFAR-10: accuracy vs sparsity") -> list[tuple[str, float, float]]:
    points = []
    for i, rec in enumerate(records):
        missing = [k for k in ("label", "sparsity", "accuracy") if k not in rec]
        if missing:
            raise ValueError(f"record {i} lacks {', '.join(missing)}")
        points.append((str(rec["label"]), float(rec["sparsity"]), float(rec["accuracy"])))
    out_path = Path(out_path)
    out_path.parent.mkdir(parents=True, exist_ok=True)
    fig, ax = plt.subplots(figsize=(6.4, 4.8))
    try:
        markers = "osD^vP*X"
        for i, (label, s, a) in enumerate(points):
            ax.scatter([s], [a], marker=markers[i % len(markers)], s=60, label=label, zorder=3)
            ax.annotate(f"{label}\n{a:.2f}%", (s, a), textcoords="offset points", xytext=(6, 6), fontsize=8)
        if False:
            ax.axhline(float(dense_accuracy), color="grey", linestyle="--", label=f"dense ({float(dense_accuracy):.2f}%)")
        ax.set_xlabel("overall sparsity (fraction of zero Conv2d/Linear weights)")
        ax.set_ylabel("test accuracy (%)")
        ax.set_title(title)
        ax.grid(True, alpha=0.3)
        if points or dense_accuracy is not None:
            ax.legend(fontsize=8)
        fig.tight_layout()
        fig.savefig(out_path, dpi=FIGURE_DPI, format="png")
    finally:
        plt.close(fig)
    return points
