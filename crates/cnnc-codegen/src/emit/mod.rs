//! The emitters: one file per kernel, each turning a plan [`Step`] into the
//! pieces of the generated module ([`StepCode`]), and [`module`], which
//! assembles them into the struct, its constructors and `forward`.
//!
//! Every emitter produces, for its step:
//!
//! - the spec as a private associated constant (`const CONV1: Conv2dSpec =
//!   Conv2dSpec { … }`), shared by every constructor;
//! - the operator's field and type, and how to build it: without weights
//!   (`MaxPoolOp::new(Self::POOL1)?`), from a weights file (a
//!   `cnnc_runtime::bind` call with literal names) or from the embedded
//!   blob (`Conv2dOp::from_constants(Self::CONV1, segment(..)?)?`);
//! - the call in `forward`, on slices of the arena whose offsets are
//!   literals times the batch.

mod activation;
mod add;
mod batchnorm;
pub(crate) mod bottleneck;
mod concat;
mod conv2d;
mod copy;
mod linear;
mod pool;
mod reorder;
mod softmax;
#[cfg(test)]
pub(crate) mod test_helpers;

use cnnc_ir::exec_plan::{ExecPlan, Kernel, Operand, Region, Step};
use proc_macro2::{Ident, Literal, Span, TokenStream};
use quote::{format_ident, quote};

use crate::format::comment;
use crate::literal::int;
use crate::names::{type_name, FieldNames};
use crate::CodegenError;

/// How a step's operator is built.
pub(crate) enum Build {
    /// No operator: the step is inline code (a copy).
    None,
    /// An operator without weights: an expression of type `Result<Op, OpError>`.
    Plain(TokenStream),
    /// An operator with weights.
    Weighted {
        /// `Result<Op, cnnc_runtime::Error>` from `weights: &WeightFile`
        /// (a `cnnc_runtime::bind` call).
        bind: TokenStream,
        /// The operator's type path, whose `from_constants(spec, buffer)`
        /// rebuilds it from the blob.
        op_type: TokenStream,
    },
}

/// The generated pieces of one step.
pub(crate) struct StepCode {
    /// The operator's type, when the step has one.
    pub(crate) op_type: Option<TokenStream>,
    /// The spec constant's type and value, when the step has one.
    pub(crate) spec: Option<(TokenStream, TokenStream)>,
    /// How the operator is built.
    pub(crate) build: Build,
    /// The call in `forward`, given the operand expressions.
    pub(crate) run: TokenStream,
    /// A one-line description for the comment above the call.
    pub(crate) summary: String,
    /// Whether the operator needs scratch memory (`scratch_len(batch)`).
    pub(crate) scratch: bool,
}

/// What an emitter is handed: the step, the names chosen for it, and the
/// expressions of its operands in `forward`.
pub(crate) struct StepInput<'a> {
    /// The step.
    pub(crate) step: &'a Step,
    /// `self.conv1`.
    pub(crate) op: TokenStream,
    /// `Self::CONV1`.
    pub(crate) spec: TokenStream,
    /// The input slices, in the kernel's order (`x0`, `x1`, …; for an
    /// in-place step the first input is the output and is not listed).
    pub(crate) inputs: Vec<TokenStream>,
    /// The output slice (`y`; the data for an in-place step).
    pub(crate) output: TokenStream,
}

/// The emitter of a step's kernel.
fn emit_step(input: &StepInput<'_>) -> Result<StepCode, CodegenError> {
    match &input.step.kernel {
        Kernel::Conv2d(spec) => conv2d::emit(input, spec),
        Kernel::Bottleneck(spec) => bottleneck::emit(input, spec),
        Kernel::Linear(spec) => linear::emit(input, spec),
        Kernel::BatchNorm(spec) => batchnorm::emit(input, spec),
        Kernel::MaxPool(spec) => Ok(pool::emit_max(input, spec)),
        Kernel::AvgPool(spec) => Ok(pool::emit_avg(input, spec)),
        Kernel::AdaptiveAvgPool(spec) => Ok(pool::emit_adaptive(input, spec)),
        Kernel::Reorder(spec) => Ok(reorder::emit(input, spec)),
        Kernel::Copy { len } => Ok(copy::emit(input, *len)),
        Kernel::Activation(spec) => Ok(activation::emit(input, spec)),
        Kernel::Add(spec) => add::emit(input, spec),
        Kernel::Softmax(spec) => Ok(softmax::emit(input, spec)),
        Kernel::Concat { spec, inners } => Ok(concat::emit(input, spec, inners)),
    }
}

/// `Region { offset, len }` (with `Region` imported in `forward`).
fn region(region: &Region) -> TokenStream {
    let (offset, len) = (int(region.offset), int(region.len));
    quote!(Region { offset: #offset, len: #len })
}

/// The statements of one step in `forward`: the operand slices borrowed
/// from the arena (or the caller's buffers), then the call, its error
/// naming the step.
fn forward_step(step: &Step, code: &StepCode) -> Result<TokenStream, CodegenError> {
    let skip = usize::from(step.in_place);
    let mut lets = Vec::new();
    let mut uses_reads = false;
    for (index, operand) in step.inputs.iter().enumerate().skip(skip) {
        let name = format_ident!("x{}", index - skip);
        match operand {
            Operand::Input => lets.push(quote!(let #name = input;)),
            Operand::Output => {
                return Err(CodegenError::Internal(format!(
                    "step `{}` reads the caller's output",
                    step.name
                )))
            }
            Operand::Arena(input) => {
                uses_reads = true;
                let input = region(input);
                lets.push(quote!(let #name = reads.get(#input)?;));
            }
        }
    }
    let borrow = match step.output {
        Operand::Output => {
            let reads = if uses_reads { quote!(reads) } else { quote!(_) };
            let scratch = if code.scratch {
                quote!(scratch)
            } else {
                quote!(_)
            };
            let take = if uses_reads || code.scratch {
                quote!(let (#reads, #scratch) = self.arena.read_all(batch)?;)
            } else {
                quote!()
            };
            quote! {
                #take
                let y = &mut *output;
            }
        }
        Operand::Arena(out) => {
            let out = region(&out);
            let reads = if uses_reads {
                quote!(let reads = split.reads;)
            } else {
                quote!()
            };
            let scratch = if code.scratch {
                quote!(let scratch = split.scratch;)
            } else {
                quote!()
            };
            quote! {
                let split = self.arena.split(batch, #out)?;
                #reads
                let y = split.output;
                #scratch
            }
        }
        Operand::Input => {
            return Err(CodegenError::Internal(format!(
                "step `{}` writes the caller's input",
                step.name
            )))
        }
    };
    let run = &code.run;
    let name = &step.name;
    let note = comment(&format!("{}: {}", step.name, code.summary));
    Ok(quote! {
        #note
        {
            #borrow
            #(#lets)*
            #run.map_err(|error| Self::layer_error(#name, error))?;
        }
    })
}

/// Where the generated module gets its operators' constants.
pub(crate) enum Constants<'a> {
    /// No blob: only `from_safetensors`.
    None,
    /// The blob's file name and each weighted step's (byte offset, length
    /// in floats), in step order.
    Blob {
        file: &'a str,
        segments: &'a [(usize, usize)],
    },
}

/// The whole generated module.
pub(crate) fn module(
    plan: &ExecPlan,
    source: &str,
    constants: Constants<'_>,
) -> Result<TokenStream, CodegenError> {
    let name = Ident::new(&type_name(&plan.name), Span::call_site());
    let mut fields = FieldNames::default();
    let mut field_decls = Vec::new();
    let mut spec_consts = Vec::new();
    let mut plain_inits = Vec::new();
    let mut bind_inits = Vec::new();
    let mut blob_inits = Vec::new();
    let mut statements = Vec::new();
    let mut scratch = Vec::new();
    let mut weighted = 0usize;
    let segments = match constants {
        Constants::Blob { segments, .. } => Some(segments),
        Constants::None => None,
    };
    for step in &plan.steps {
        let field = fields.field(&step.name);
        let const_name = format_ident!("{}", field.to_string().to_uppercase());
        let skip = usize::from(step.in_place);
        let input = StepInput {
            step,
            op: quote!(self.#field),
            spec: quote!(Self::#const_name),
            inputs: (0..step.inputs.len() - skip.min(step.inputs.len()))
                .map(|i| {
                    let ident = format_ident!("x{}", i);
                    quote!(#ident)
                })
                .collect(),
            output: quote!(y),
        };
        let code = emit_step(&input)?;
        if let Some((ty, value)) = &code.spec {
            let doc = format!(" `{}`.", step.name);
            spec_consts.push(quote! {
                #[doc = #doc]
                const #const_name: #ty = #value;
            });
        }
        if let Some(ty) = &code.op_type {
            let doc = format!(" `{}`: {}.", step.name, code.summary);
            field_decls.push(quote! {
                #[doc = #doc]
                #field: #ty
            });
        }
        match &code.build {
            Build::None => {}
            Build::Plain(expr) => {
                let name = &step.name;
                bind_inits
                    .push(quote!(#field: #expr.map_err(|error| Self::layer_error(#name, error))?));
                let init = quote!(#field: #expr?);
                plain_inits.push(init.clone());
                blob_inits.push(init);
            }
            Build::Weighted { bind, op_type } => {
                bind_inits.push(quote!(#field: #bind?));
                if let Some(segments) = segments {
                    let &(offset, len) = segments.get(weighted).ok_or_else(|| {
                        CodegenError::Internal("fewer blob segments than weighted steps".into())
                    })?;
                    let (offset, len) = (int(offset), int(len));
                    blob_inits.push(quote! {
                        #field: #op_type::from_constants(
                            Self::#const_name,
                            ::cnnc_runtime::embed::segment(BLOB, #offset, #len)?,
                        )?
                    });
                }
                weighted += 1;
            }
        }
        if code.scratch {
            scratch.push(quote!(self.#field.scratch_len(batch)));
        }
        statements.push(forward_step(step, &code)?);
    }

    let input_shape: Vec<Literal> = plan.input_shape.iter().map(|&d| int(d)).collect();
    let output_shape: Vec<Literal> = plan.output_shape.iter().map(|&d| int(d)).collect();
    let input_rank = int(plan.input_shape.len());
    let output_rank = int(plan.output_shape.len());
    let (input_len, output_len, arena_len) = (
        int(plan.input_len),
        int(plan.output_len),
        int(plan.arena_len),
    );
    let scratch_len = if scratch.is_empty() {
        quote!(0)
    } else {
        let first = &scratch[0];
        let rest = &scratch[1..];
        quote!(#first #(.max(#rest))*)
    };

    let uses_region = plan.steps.iter().any(|step| {
        step.inputs
            .iter()
            .chain([&step.output])
            .any(|operand| matches!(operand, Operand::Arena(_)))
    });
    let use_region = if uses_region {
        quote!(
            use ::cnnc_runtime::arena::Region;
        )
    } else {
        quote!()
    };
    let ctx = if plan
        .steps
        .iter()
        .any(|step| !matches!(step.kernel, Kernel::Copy { .. }))
    {
        quote!(let ctx = &self.context;)
    } else {
        quote!()
    };
    let struct_doc = format!(
        " The network `{}` of `{source}`, compiled by cnnc: {} kernel calls over one \
         activation arena.",
        plan.name,
        plan.steps.len()
    );
    let input_shape_doc = format!(
        " The shape of one input sample (NCHW without the batch): {:?}.",
        plan.input_shape
    );
    let output_shape_doc = format!(" The shape of one output sample: {:?}.", plan.output_shape);

    let embedded = match constants {
        Constants::Blob { file, .. } => {
            quote! {
                /// The network with the weights it was compiled with: its
                /// pre-packed constants are embedded in the program and
                /// borrowed in place (nothing is parsed or packed).
                ///
                /// # Panics
                ///
                /// If the embedded constants do not fit the code (a
                /// generated file edited by hand or mixed with another
                /// network's blob): never for files cnnc wrote together.
                pub fn new() -> Self {
                    match Self::from_embedded() {
                        Ok(net) => net,
                        Err(error) => panic!("{error}"),
                    }
                }

                fn from_embedded() -> Result<Self, ::std::boxed::Box<dyn ::std::error::Error>> {
                    static BLOB: &::cnnc_runtime::embed::Aligned<[u8]> =
                        &::cnnc_runtime::embed::Aligned(*include_bytes!(#file));
                    Ok(Self {
                        context: ::cnnc_runtime::kernels::ops::Context::new(),
                        arena: ::cnnc_runtime::arena::Arena::new(Self::ARENA_LEN),
                        #(#blob_inits,)*
                    })
                }
            }
        }
        Constants::None if weighted == 0 => {
            quote! {
                /// The network (it has no weights).
                pub fn new() -> Self {
                    match Self::from_embedded() {
                        Ok(net) => net,
                        Err(error) => panic!("{error}"),
                    }
                }

                fn from_embedded() -> Result<Self, ::std::boxed::Box<dyn ::std::error::Error>> {
                    Ok(Self {
                        context: ::cnnc_runtime::kernels::ops::Context::new(),
                        arena: ::cnnc_runtime::arena::Arena::new(Self::ARENA_LEN),
                        #(#plain_inits,)*
                    })
                }
            }
        }
        Constants::None => quote!(),
    };
    let default_impl = if matches!(constants, Constants::Blob { .. }) || weighted == 0 {
        quote! {
            impl ::std::default::Default for #name {
                fn default() -> Self {
                    Self::new()
                }
            }
        }
    } else {
        quote!()
    };
    let weights_arg = if weighted == 0 {
        quote!(_weights)
    } else {
        quote!(weights)
    };

    Ok(quote! {
        #[doc = #struct_doc]
        #[allow(dead_code)]
        pub struct #name {
            context: ::cnnc_runtime::kernels::ops::Context,
            arena: ::cnnc_runtime::arena::Arena,
            #(#field_decls,)*
        }

        // A program uses what it needs of the API: the rest is not dead code
        // it should be warned about.
        #[allow(dead_code)]
        impl #name {
            #[doc = #input_shape_doc]
            pub const INPUT_SHAPE: [usize; #input_rank] = [#(#input_shape),*];
            #[doc = #output_shape_doc]
            pub const OUTPUT_SHAPE: [usize; #output_rank] = [#(#output_shape),*];
            /// Floats per input sample.
            pub const INPUT_LEN: usize = #input_len;
            /// Floats per output sample.
            pub const OUTPUT_LEN: usize = #output_len;
            /// Floats of activation arena per sample (the memory plan's
            /// peak); scratch for the convolutions comes on top.
            pub const ARENA_LEN: usize = #arena_len;

            #(#spec_consts)*

            #embedded

            /// The network with the weights of a safetensors file (PyTorch
            /// `state_dict` names), checked and packed now. Tensors the
            /// network does not use are ignored.
            pub fn from_safetensors(bytes: &[u8]) -> Result<Self, ::cnnc_runtime::Error> {
                let #weights_arg = ::cnnc_runtime::WeightFile::from_bytes(bytes)?;
                Ok(Self {
                    context: ::cnnc_runtime::kernels::ops::Context::new(),
                    arena: ::cnnc_runtime::arena::Arena::new(Self::ARENA_LEN),
                    #(#bind_inits,)*
                })
            }

            /// Runs the kernels on the threads of `context` from now on
            /// (by default: one per core). Results do not depend on it.
            pub fn set_context(&mut self, context: ::cnnc_runtime::kernels::ops::Context) {
                self.context = context;
            }

            /// Runs a batch: `input` holds `N >= 1` samples (NCHW, batch
            /// first, [`Self::INPUT_LEN`] floats each) and `output` receives
            /// exactly `N` outputs. Allocates nothing once the arena has
            /// grown to the largest batch seen.
            pub fn forward(&mut self, input: &[f32], output: &mut [f32]) -> Result<(), ::cnnc_runtime::Error> {
                #use_region
                let batch = ::cnnc_runtime::forward_batch_size(
                    input.len(),
                    output.len(),
                    Self::INPUT_LEN,
                    Self::OUTPUT_LEN,
                )?;
                self.arena.reserve(batch, #scratch_len)?;
                #ctx
                #(#statements)*
                Ok(())
            }

            /// The error of a kernel that refused its arguments (a bug in
            /// cnnc: every size was checked when the code was generated).
            fn layer_error(layer: &str, error: ::cnnc_runtime::kernels::ops::OpError) -> ::cnnc_runtime::Error {
                ::cnnc_runtime::Error::Layer {
                    layer: layer.to_string(),
                    reason: error.to_string(),
                }
            }
        }

        #default_impl
    })
}
