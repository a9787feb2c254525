"""Every cell of the paper's comparison tables (Yun et al., CVPR 2020, Tables 1-5).

A cell is TABLE:DATASET:MODEL:METHOD and is passed after the file name:

    cskd-train --config=configs/paper.py:table1:cifar100:cskd_preact_resnet18:cskd \
        --workdir=runs/paper/table1/cifar100/cskd_preact_resnet18/cskd

TABLE    table1 (CE, AdaCos, Virtual-softmax, Maximum-entropy, Label-smoothing, CS-KD;
                 ResNet-18 and DenseNet-121), table2 (CE, DDGSD, BYOT, CS-KD, CS-KD-E;
                 ResNet-18), table3 (CE, CS-KD, Mixup, Mixup + CS-KD; ResNet-18),
         table4 (CE, CS-KD, KD, KD + CS-KD; ResNet-10 students, plus the DenseNet-121 teacher
                 trained with CS-KD), table5 (CE, CS-KD on ImageNet; ResNet-50/101,
                 ResNeXt-101 32x4d, 90 epochs, batch 256)
DATASET  cifar100, tinyimagenet, cub200, dogs, mit67 (Tables 1-4); imagenet (Table 5)
MODEL    a registry name: the CIFAR-style nets (cskd_preact_resnet18, densenet121_cifar,
         cskd_preact_resnet10) on the 32 px datasets, the ImageNet-style ones (resnet18,
         densenet121, resnet10) on the fine-grained ones
METHOD   a name in cskd_tf.losses.METHODS

List the valid cells (136) with

    python -c 'from cskd_tf.recipes import paper_cells; print(*paper_cells(), sep="\\n")'

Each config is cskd_tf.recipes.paper_config(DATASET) (the paper's recipe for that dataset)
with the cell's model and method; method hyperparameters are the defaults documented in
cskd_tf/config.py. Table 4's KD students read their teacher from the teacher cell's
conventional workdir, e.g. runs/paper/table4/cifar100/densenet121_cifar/cskd (train that cell
there first, from the repository root, or set --config.kd.teacher_workdir). Any field can still be
overridden with --config.FIELD=VALUE.
"""

from cskd_tf.errors import ConfigError
from cskd_tf.recipes import paper_cell_config, paper_cells  # noqa: F401 (paper_cells: listing)


def get_config(cell=None):
    if not cell:
        raise ConfigError("configs/paper.py needs a cell: --config=configs/paper.py:"
                          "TABLE:DATASET:MODEL:METHOD, e.g. "
                          "table1:cifar100:cskd_preact_resnet18:cskd "
                          "(see the file's docstring for the list)")
    return paper_cell_config(cell)
