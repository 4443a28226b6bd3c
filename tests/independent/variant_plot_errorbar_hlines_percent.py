# correct variant: points drawn with errorbar (no error), dense with ax.hlines across the x range, percent ticks.
def plot_sparsity_vs_accuracy(records, out_path, dense_accuracy=None, title="VGG13 on CIFAR-10: accuracy vs sparsity"):
    points = [(str(r["label"]), float(r["sparsity"]), float(r["accuracy"])) for r in records]
    fig, ax = plt.subplots()
    for label, s, a in points:
        ax.errorbar([s], [a], fmt="s", capsize=3, label=label)
        ax.annotate(label, (s, a))
    if dense_accuracy is not None:
        ax.hlines(dense_accuracy, 0.0, 1.0, colors="grey", linestyles=":", label="dense")
    ax.xaxis.set_major_formatter(PercentFormatter(xmax=1.0))
    ax.legend()
    ax.set_title(title)
    fig.savefig(out_path, dpi=FIGURE_DPI)
    plt.close(fig)
    return points
