"""Methods: distributions over target-network weights behind one interface (``Method``)."""

from hypernets.methods.base import Method, StackedParams
from hypernets.methods.bayes_by_backprop import BayesByBackprop
from hypernets.methods.bayes_by_hypernet import BayesByHypernet
from hypernets.methods.bayesian_hypernetwork import BayesianHypernetwork
from hypernets.methods.ensemble import DeepEnsemble
from hypernets.methods.hypergan import HyperGAN
from hypernets.methods.hypergan_mi import HyperGANMI
from hypernets.methods.map import MAP
from hypernets.methods.mc_dropout import MCDropout
from hypernets.methods.mnf import MultiplicativeNormalizingFlows

__all__ = ["Method", "StackedParams", "MAP", "MCDropout", "DeepEnsemble", "BayesByBackprop", "HyperGAN", "HyperGANMI", "BayesByHypernet", "BayesianHypernetwork",
           "MultiplicativeNormalizingFlows"]
