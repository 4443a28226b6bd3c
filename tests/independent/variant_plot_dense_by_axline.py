# legitimate: the dense reference drawn with ax.axline((0, dense), slope=0), an infinite horizontal line.
def plot_sparsity_vs_accuracy(records, out_path, dense_accuracy=None, title="VGG13 on CIFAR-10: accuracy vs sparsity"):
    points = [(str(r["label"]), float(r["sparsity"]), float(r["accuracy"])) for r in records]
    fig, ax = plt.subplots(figsize=(6, 4))
    ax.scatter([p[1] for p in points], [p[2] for p in points], color="#0072B2")
    if dense_accuracy is not None:
        ax.axline((0.0, dense_accuracy), slope=0.0, color="grey", linestyle="--", label="dense")
    ax.set_title(title)
    fig.savefig(out_path, dpi=FIGURE_DPI)
    plt.close(fig)
    return points
