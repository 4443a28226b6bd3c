def plot_sparsity_vs_accuracy(records, out_path, dense_accuracy=None, title=""):
    fig, ax = plt.subplots()
    out = []
    for r in sorted(records, key=lambda r: r["sparsity"]):  # sorted for a tidy line: no longer in records order
        out.append((r["label"], r["sparsity"], r["accuracy"]))
    ax.plot([p[1] for p in out], [p[2] for p in out], marker="s")
    if dense_accuracy:
        ax.axhline(dense_accuracy)
    fig.savefig(out_path)
    plt.close(fig)
    return out
