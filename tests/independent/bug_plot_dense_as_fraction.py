# bug: accuracies are drawn in percent, but the dense line at dense_accuracy / 100 (0.93 on a 0..100 axis).
def plot_sparsity_vs_accuracy(records, out_path, dense_accuracy=None, title="VGG13 on CIFAR-10: accuracy vs sparsity"):
    points = [(str(r["label"]), float(r["sparsity"]), float(r["accuracy"])) for r in records]
    fig, ax = plt.subplots(figsize=(6, 4))
    ax.scatter([p[1] for p in points], [p[2] for p in points])
    if dense_accuracy is not None:
        ax.axhline(dense_accuracy / 100, color="grey", linestyle="--", label="dense")  # BUG: percent axis
    ax.set_title(title)
    fig.savefig(out_path, dpi=FIGURE_DPI)
    plt.close(fig)
    return points
