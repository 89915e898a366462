"""The pair camera head on ``chair_orbit`` (every 4th frame, windows of 4 frames, all pairs) against identity.

    python benchmarks/chair_pair_check.py WEIGHTS.pt

WEIGHTS: a ``PairCameraHead`` state dict (``camera_probe.py --variants flow_pair --save``). Prints Racc@5/15/30, the
median rotation error, the mean predicted and true pair angles and the focal length over the width, for the
asymmetric and the symmetric head. A diagnostic of transfer (LEARNING.md exp 24): no training on the chair.
"""
import sys, json, numpy as np, torch, cv2
from pathlib import Path
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from pensieve_ns.model.camera_head import PairCameraHead
from pensieve_ns.eval.poses import relative_pose_errors, summarise
torch.set_num_threads(1)
d = str(Path(__file__).resolve().parents[2] / 'shared' / 'data' / 'chair_orbit')
T=json.load(open(f'{d}/transforms.json'))
frames=T['frames'][::4]
imgs=torch.stack([torch.from_numpy(cv2.cvtColor(cv2.imread(f"{d}/{f['file_path']}"),cv2.COLOR_BGR2RGB)).permute(2,0,1).float()/255 for f in frames])
flip=np.diag([1,-1,-1,1.0])
c2w=np.stack([np.array(f['transform_matrix'])@flip for f in frames])  # OpenGL -> OpenCV
for sym in (False, True):
    h=PairCameraHead(symmetric=sym); h.load_state_dict(torch.load(sys.argv[1])); h.eval()
    errs=[];ident=[]
    with torch.no_grad():
        for s in range(0,50-3,3):
            idx=list(range(s,s+4))
            pc,K,_=h(imgs[idx][None])
            errs.append(relative_pose_errors(pc[0].double().numpy(), c2w[idx]))
            ident.append(relative_pose_errors(np.tile(np.eye(4),(4,1,1)), c2w[idx]))
    a,b=summarise(errs),summarise(ident)
    print('sym',sym,'Racc@5/15/30', a['Racc@5'],a['Racc@15'],a['Racc@30'],'rot med',round(a['rot_err_median'],1),'angle',round(a['pred_pair_angle_mean'],1),'/',round(a['true_pair_angle_mean'],1),'| identity',b['Racc@5'],b['Racc@15'],b['Racc@30'],round(b['rot_err_median'],1), 'focal', float(K[0,0,0,0])/128, T['fl_x']/128)
